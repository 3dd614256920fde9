"""``eventseam relay``: run the outbox relay (outbox.relay.Relay) until SIGTERM or SIGINT.

Settings come from the environment and the TOML file (engine.settings). The first SIGTERM or
SIGINT stops the relay gracefully: no new rows are claimed, batches in flight land and are
marked, the slot leases are released, and the process exits 0. A second signal stops at once.
This process configures structlog for itself (the library never does; engine.cli.logging).
With ``--metrics-port`` it serves Prometheus metrics (engine.metrics) and samples the outbox
gauges every ``metrics.OUTBOX_INTERVAL`` seconds.
"""

from __future__ import annotations

import functools
import signal
from typing import TYPE_CHECKING

import anyio
import click
import structlog
from pydantic import ValidationError

from engine import metrics
from engine.cli.logging import configure_logging as configure_logging  # integrations import it
from engine.cli.logging import logging_options
from engine.errors import SettingsError
from engine.settings import EventSeamSettings, load_settings

if TYPE_CHECKING:
    from outbox.bundled_broker import BundledBroker
    from outbox.relay import Relay

log = structlog.get_logger(__name__)


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
@logging_options
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65_535),
    default=None,
    help="Serve Prometheus metrics on this port (/metrics); the outbox gauges are sampled too.",
)
@click.option("--metrics-addr", default="0.0.0.0", show_default=True, help="Address to serve on.")
def relay(
    bundled_broker: bool,
    log_level: str,
    json_logs: bool,
    metrics_port: int | None,
    metrics_addr: str,
) -> None:
    """Forward pending outbox rows to Kafka until SIGTERM or SIGINT."""
    configure_logging(log_level, json_logs=json_logs)
    settings = _settings()
    if metrics_port is not None:
        try:
            metrics.serve(metrics_port, metrics_addr)
        except (SettingsError, OSError) as exc:
            raise click.ClickException(f"cannot serve metrics: {exc}") from exc
    sampled = metrics_port is not None
    if settings.kafka.bootstrap_servers:
        anyio.run(functools.partial(serve, settings, sample_outbox=sampled), backend="asyncio")
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
        relayed = functools.partial(serve, _with_broker(settings, broker), sample_outbox=sampled)
        anyio.run(relayed, backend="asyncio")


async def serve(settings: EventSeamSettings, *, sample_outbox: bool = False) -> None:
    """Run a Relay until a signal stops it; ``sample_outbox`` also sets the outbox gauges."""
    from outbox.relay import Relay

    relay = Relay(settings)
    async with anyio.create_task_group() as group:
        group.start_soon(_stop_on_signals, relay, group.cancel_scope)
        if sample_outbox:
            group.start_soon(functools.partial(metrics.sample_outbox, settings.database_url))
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
