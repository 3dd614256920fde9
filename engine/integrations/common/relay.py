"""``eventseam relay`` with settings a host framework read (its management command, its CLI)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import click
import structlog

if TYPE_CHECKING:
    from engine.settings import EventSeamSettings

__all__ = ["run_relay"]

_log = structlog.get_logger(__name__)


def run_relay(
    settings: EventSeamSettings,
    *,
    bundled_broker: bool,
    log_level: str,
    json_logs: bool,
    missing_servers: str,
) -> None:
    """``eventseam relay`` with ``settings``: run the relay until SIGTERM or SIGINT.

    Without Kafka bootstrap servers it starts the bundled development broker when
    ``bundled_broker`` (idempotence ``auto`` becomes ``off`` there), else raises
    click.ClickException (exit status 1) with ``missing_servers``: how to set them in the
    framework's settings.
    """
    if not settings.kafka.bootstrap_servers and not bundled_broker:
        raise click.ClickException(
            f"no Kafka bootstrap servers: {missing_servers} (or pass --bundled-broker for a "
            "development broker that keeps nothing)"
        )
    from engine.cli.relay import configure_logging, serve

    configure_logging(log_level, json_logs=json_logs)
    if settings.kafka.bootstrap_servers:
        anyio.run(serve, settings, backend="asyncio")
        return
    from outbox.bundled_broker import BundledBroker

    with BundledBroker() as broker:
        _log.warning(
            "bundled_broker_started", bootstrap_servers=broker.bootstrap_servers, storage="memory"
        )
        anyio.run(
            serve, _with_bundled_broker(settings, broker.bootstrap_servers), backend="asyncio"
        )


def _with_bundled_broker(settings: EventSeamSettings, bootstrap_servers: str) -> EventSeamSettings:
    """``settings`` pointed at the bundled broker on ``bootstrap_servers``.

    ``enable_idempotence="auto"`` becomes ``"off"``: the bundled broker refuses idempotent
    producers (outbox.bundled_broker), and asking first only logs a fallback warning and an
    aiokafka error line. An explicit ``"on"`` is kept (the relay then fails, as asked).
    """
    update: dict[str, object] = {"bootstrap_servers": bootstrap_servers}
    if settings.kafka.enable_idempotence == "auto":
        update["enable_idempotence"] = "off"
    return settings.model_copy(update={"kafka": settings.kafka.model_copy(update=update)})
