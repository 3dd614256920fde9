"""``manage.py eventseam_relay [--bundled-broker] [--log-level LEVEL] [--json-logs]
[--metrics-port PORT] [--metrics-addr ADDR] [--health-port PORT] [--health-addr ADDR]``.

``eventseam relay`` with settings.EVENTSEAM: forwards pending outbox rows of Django's database to
Kafka until SIGTERM or SIGINT (the first stops gracefully, a second at once).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.management.base import BaseCommand

from engine.cli.options import LEVELS
from engine.integrations.django.commands import run_relay
from engine.integrations.django.seam import get_config

if TYPE_CHECKING:
    from django.core.management.base import CommandParser


class Command(BaseCommand):
    """Run the outbox relay with this project's eventseam settings."""

    help = "Forward pending outbox rows to Kafka until SIGTERM or SIGINT (`eventseam relay`)."

    def add_arguments(self, parser: CommandParser) -> None:
        """The options of `eventseam relay`."""
        parser.add_argument(
            "--bundled-broker",
            action="store_true",
            help="when no Kafka bootstrap servers are set, start the bundled memory broker (development only)",
        )
        parser.add_argument("--log-level", default="info", choices=LEVELS)
        parser.add_argument(
            "--json-logs", action="store_true", help="log JSON lines instead of human-readable ones"
        )
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=None,
            help="serve Prometheus metrics on this port (/metrics); the outbox gauges are sampled too",
        )
        parser.add_argument("--metrics-addr", default="0.0.0.0", help="address to serve metrics on")
        parser.add_argument(
            "--health-port",
            type=int,
            default=None,
            help="serve liveness (/healthz) and readiness (/readyz) probes on this port",
        )
        parser.add_argument("--health-addr", default="0.0.0.0", help="address to serve probes on")

    def handle(self, *args: str, **options: Any) -> None:
        """Run the relay until a signal stops it."""
        run_relay(
            get_config().settings,
            bundled_broker=bool(options["bundled_broker"]),
            log_level=str(options["log_level"]),
            json_logs=bool(options["json_logs"]),
            metrics_port=options["metrics_port"],
            metrics_addr=str(options["metrics_addr"]),
            health_port=options["health_port"],
            health_addr=str(options["health_addr"]),
        )
