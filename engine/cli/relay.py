"""``eventseam relay``: run the outbox relay (outbox.relay.Relay) until SIGTERM or SIGINT.

Settings come from the environment and the TOML file (engine.settings). The first SIGTERM or
SIGINT stops the relay gracefully: no new rows are claimed, batches in flight land and are
marked, the slot leases are released, and the process exits 0. A second signal stops at once.
This process configures structlog for itself (the library never does).
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import TYPE_CHECKING

import anyio
import click
import structlog
from pydantic import ValidationError

from engine.settings import EventSeamSettings, load_settings

if TYPE_CHECKING:
    from outbox.bundled_broker import BundledBroker
    from outbox.relay import Relay

log = structlog.get_logger(__name__)


def configure_logging(level: str, *, json_logs: bool) -> None:
    """structlog for this process: ``level`` and up, to stderr, as JSON or for humans."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def _settings() -> EventSeamSettings:
    try:
        return load_settings()
    except ValidationError as exc:
        raise click.ClickException(f"invalid eventseam settings: {exc}") from exc


def _with_broker(settings: EventSeamSettings, broker: BundledBroker) -> EventSeamSettings:
    kafka = settings.kafka.model_copy(update={"bootstrap_servers": broker.bootstrap_servers})
    return settings.model_copy(update={"kafka": kafka})


@click.command()
@click.option(
    "--bundled-broker",
    is_flag=True,
    help="When no Kafka bootstrap servers are set, start the bundled memory broker (development only).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.option("--json-logs", is_flag=True, help="Log JSON lines instead of human-readable ones.")
def relay(bundled_broker: bool, log_level: str, json_logs: bool) -> None:
    """Forward pending outbox rows to Kafka until SIGTERM or SIGINT."""
    configure_logging(log_level, json_logs=json_logs)
    settings = _settings()
    if settings.kafka.bootstrap_servers:
        anyio.run(serve, settings, backend="asyncio")
        return
    if not bundled_broker:
        raise click.ClickException(
            "no Kafka bootstrap servers: set EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS "
            "(or pass --bundled-broker for a development broker that keeps nothing)"
        )
    from outbox.bundled_broker import BundledBroker

    with BundledBroker() as broker:
        log.warning(
            "bundled_broker_started", bootstrap_servers=broker.bootstrap_servers, storage="memory"
        )
        anyio.run(serve, _with_broker(settings, broker), backend="asyncio")


async def serve(settings: EventSeamSettings) -> None:
    """Run a Relay until a signal stops it."""
    from outbox.relay import Relay

    relay = Relay(settings)
    async with anyio.create_task_group() as group:
        group.start_soon(_stop_on_signals, relay, group.cancel_scope)
        await relay.run()
        group.cancel_scope.cancel()


async def _stop_on_signals(relay: Relay, scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        stopping = False
        async for signum in signals:
            if stopping:
                log.warning("relay_stopping_now", signal=signal.Signals(signum).name)
                scope.cancel()
                return
            stopping = True
            log.info("relay_stopping", signal=signal.Signals(signum).name)
            relay.stop()
