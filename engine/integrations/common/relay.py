"""``eventseam relay`` with settings a host framework read (its management command, its CLI)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.settings import EventSeamSettings

__all__ = ["run_relay"]


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
    """``eventseam relay`` with ``settings``: run the relay until SIGTERM or SIGINT.

    Without Kafka bootstrap servers it starts the bundled development broker when
    ``bundled_broker`` (idempotence ``auto`` becomes ``off`` there), else raises
    click.ClickException (exit status 1) with ``missing_servers``: how to set them in the
    framework's settings. With ``metrics_port`` it serves Prometheus metrics (the ``metrics``
    extra) and samples the outbox gauges, with ``health_port`` liveness and readiness probes
    (engine.health). The relay runner is engine.cli.relay.run_relay, imported here on use.
    """
    from engine.cli import relay

    relay.run_relay(
        settings,
        bundled_broker=bundled_broker,
        log_level=log_level,
        json_logs=json_logs,
        missing_servers=missing_servers,
        metrics_port=metrics_port,
        metrics_addr=metrics_addr,
        health_port=health_port,
        health_addr=health_addr,
    )
