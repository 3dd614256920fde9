"""Options and settings shared by the commands.

``--log-level`` and ``--json-logs`` (engine.cli.logging configures structlog with them),
``--metrics-port`` and ``--metrics-addr`` (engine.metrics serves Prometheus metrics there), and
``--health-port`` and ``--health-addr`` (engine.health serves /healthz and /readyz there), which
every long-running command takes (``eventseam relay``, ``eventseam worker``); ``--url`` and the
settings as the database commands read them (``db``, ``outbox``, ``inbox``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, TypeVar

import click
from pydantic import ValidationError

from engine import health, metrics
from engine.errors import SettingsError
from engine.settings import EventSeamSettings, load_settings

if TYPE_CHECKING:
    from collections.abc import Callable

_F = TypeVar("_F", bound="Callable[..., object]")

LEVELS: Final = ("debug", "info", "warning", "error")
METRICS_HELP: Final = "Serve Prometheus metrics on this port (/metrics)."


#: ``--url URL``: the database a command works on (default: the database_url setting).
url_option = click.option(
    "--url",
    metavar="URL",
    default=None,
    help="SQLAlchemy URL of the database (default: the database_url setting).",
)


def settings_or_fail() -> EventSeamSettings:
    """The eventseam settings; a ClickException (exit status 1) when they do not validate."""
    try:
        return load_settings()
    except ValidationError as exc:
        raise click.ClickException(f"invalid eventseam settings: {exc}") from exc


def logging_options(command: _F) -> _F:
    """The ``--log-level`` and ``--json-logs`` options every long-running command takes."""
    command = click.option(
        "--json-logs", is_flag=True, help="Log JSON lines instead of human-readable ones."
    )(command)
    return click.option(
        "--log-level", default="info", show_default=True, type=click.Choice(LEVELS)
    )(command)


def metrics_options(port_help: str = METRICS_HELP) -> Callable[[_F], _F]:
    """The ``--metrics-port`` (help text ``port_help``) and ``--metrics-addr`` options."""

    def decorate(command: _F) -> _F:
        command = click.option(
            "--metrics-addr", default="0.0.0.0", show_default=True, help="Address to serve on."
        )(command)
        return click.option(
            "--metrics-port", type=click.IntRange(0, 65_535), default=None, help=port_help
        )(command)

    return decorate


def serve_metrics(port: int | None, address: str) -> None:
    """Serve Prometheus metrics on ``address:port`` unless ``port`` is None.

    Raises click.ClickException (exit status 1) when the port cannot be served.
    """
    if port is None:
        return
    try:
        metrics.serve(port, address)
    except (SettingsError, OSError) as exc:
        raise click.ClickException(f"cannot serve metrics: {exc}") from exc


def health_options(command: _F) -> _F:
    """The ``--health-port`` and ``--health-addr`` options (engine.health's probes)."""
    command = click.option(
        "--health-addr", default="0.0.0.0", show_default=True, help="Address to serve probes on."
    )(command)
    return click.option(
        "--health-port",
        type=click.IntRange(0, 65_535),
        default=None,
        help="Serve liveness (/healthz) and readiness (/readyz) probes on this port.",
    )(command)


def relay_options(command: _F) -> _F:
    """Every option of ``eventseam relay`` (the framework commands that run it take them too):
    ``--bundled-broker``, the logging, metrics and health options. The command gets them as
    ``run_relay``'s keyword arguments."""
    metrics_help = (
        "Serve Prometheus metrics on this port (/metrics); the outbox gauges are sampled too."
    )
    command = metrics_options(metrics_help)(health_options(command))
    return click.option(
        "--bundled-broker",
        is_flag=True,
        help="When no Kafka bootstrap servers are set, start the bundled memory broker "
        "(development only).",
    )(logging_options(command))


def serve_health(port: int | None, address: str) -> health.Health | None:
    """Serve probes on ``address:port`` unless ``port`` is None; the Health to feed, or None.

    The caller runs ``Health.heartbeat`` in its event loop and ``watch``es its component.
    Raises click.ClickException (exit status 1) when the port cannot be served.
    """
    if port is None:
        return None
    probes = health.Health()
    try:
        health.serve(probes, port, address)
    except OSError as exc:
        raise click.ClickException(f"cannot serve health probes: {exc}") from exc
    return probes
