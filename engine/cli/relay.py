"""``eventseam relay``: run the outbox relay (outbox.relay.Relay) until SIGTERM or SIGINT.

Settings come from the environment and the TOML file (engine.settings). The first SIGTERM or
SIGINT stops the relay gracefully: no new rows are claimed, batches in flight land and are
marked, the slot leases are released, and the process exits 0. A second signal stops at once.
This process configures structlog for itself (the library never does; engine.cli.logging).
With ``--metrics-port`` it serves Prometheus metrics (engine.metrics) and samples the outbox
gauges every ``metrics.OUTBOX_INTERVAL`` seconds; with ``--health-port``, liveness and readiness
probes (engine.health: ready once connected with its topics, while sends and claims succeed).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import anyio
import click
import structlog

from engine import metrics
from engine.cli.failure import fail
from engine.cli.logging import configure_logging
from engine.cli.options import relay_options, serve_health, serve_metrics, settings_or_fail
from engine.cli.signals import stop_on_signals
from outbox import migrate
from outbox.errors import KafkaSecurityError, SchemaError
from outbox.kafka_security import first_security_error

if TYPE_CHECKING:
    from engine.health import Health
    from engine.settings import EventSeamSettings

log = structlog.get_logger(__name__)


@click.command()
@relay_options
def relay(**options: Any) -> None:
    """Forward pending outbox rows to Kafka until SIGTERM or SIGINT."""
    run_relay(
        settings_or_fail(), missing_servers="set EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS", **options
    )


def run_relay(
    settings: EventSeamSettings,
    *,
    bundled_broker: bool,
    log_level: str,
    json_logs: bool,
    missing_servers: str,
    metrics_port: int | None = None,
    metrics_addr: str = "0.0.0.0",
    health_port: int | None = None,
    health_addr: str = "0.0.0.0",
) -> None:
    """Run the relay with ``settings`` until SIGTERM or SIGINT (``eventseam relay`` and the
    framework commands that wrap it).

    Without Kafka bootstrap servers it starts the bundled development broker when
    ``bundled_broker`` (idempotence ``auto`` becomes ``off`` there), else raises
    click.ClickException (exit status 1) with ``missing_servers``: how to set them. With
    ``metrics_port`` it serves Prometheus metrics and samples the outbox gauges, with
    ``health_port`` liveness and readiness probes (engine.health). Before starting
    it checks the database's eventseam schema (outbox.migrate.require_schema): an older revision
    than this code's head, or no eventseam tables at all, raises click.ClickException with exit
    status 2.
    """
    if not settings.kafka.bootstrap_servers and not bundled_broker:
        raise click.ClickException(
            f"no Kafka bootstrap servers: {missing_servers} (or pass --bundled-broker for a "
            "development broker that keeps nothing)"
        )
    configure_logging(log_level, json_logs=json_logs)
    try:
        migrate.require_schema(settings.database_url)
    except SchemaError as exc:  # older than this code, or no tables: a configuration error
        fail(str(exc))
    serve_metrics(metrics_port, metrics_addr)
    probes = serve_health(health_port, health_addr)
    sampled = metrics_port is not None
    try:
        _run(settings, sampled, probes)
    except* KafkaSecurityError as errors:  # TLS/SASL that cannot work: exit, do not retry
        raise click.ClickException(str(first_security_error(errors))) from None


def _run(settings: EventSeamSettings, sampled: bool, probes: Health | None) -> None:
    run = functools.partial(serve, sample_outbox=sampled, health=probes)
    if settings.kafka.bootstrap_servers:
        anyio.run(run, settings, backend="asyncio")
        return
    from outbox.bundled_broker import BundledBroker

    with BundledBroker() as broker:
        log.warning(
            "bundled_broker.started", bootstrap_servers=broker.bootstrap_servers, storage="memory"
        )
        bundled = with_bundled_broker(settings, broker.bootstrap_servers)
        anyio.run(run, bundled, backend="asyncio")


def with_bundled_broker(settings: EventSeamSettings, bootstrap_servers: str) -> EventSeamSettings:
    """``settings`` pointed at the bundled broker on ``bootstrap_servers``.

    ``enable_idempotence="auto"`` becomes ``"off"``: the bundled broker refuses idempotent
    producers (outbox.bundled_broker), and asking first only logs a fallback warning and an
    aiokafka error line. An explicit ``"on"`` is kept (the relay then fails, as asked).
    """
    update: dict[str, object] = {"bootstrap_servers": bootstrap_servers}
    if settings.kafka.enable_idempotence == "auto":
        update["enable_idempotence"] = "off"
    return settings.model_copy(update={"kafka": settings.kafka.model_copy(update=update)})


async def serve(
    settings: EventSeamSettings, *, sample_outbox: bool = False, health: Health | None = None
) -> None:
    """Run a Relay until a signal stops it; ``sample_outbox`` also sets the outbox gauges, and
    ``health`` gets the relay's condition and this event loop's heartbeat."""
    from outbox.process_tuning import tune_for_relay
    from outbox.relay import Relay

    relay = Relay(settings)
    tune_for_relay()  # this process runs the relay only
    async with anyio.create_task_group() as group:
        await group.start(stop_on_signals, relay.stop, group.cancel_scope, "relay.stopping")
        if sample_outbox:
            group.start_soon(functools.partial(metrics.sample_outbox, settings.database_url))
        if health is not None:
            health.watch("relay", relay.condition)
            group.start_soon(health.heartbeat)
        await relay.run()
        group.cancel_scope.cancel()
