"""``manage.py eventseam_relay [--bundled-broker] [--log-level LEVEL] [--json-logs]
[--metrics-port PORT] [--metrics-addr ADDR] [--health-port PORT] [--health-addr ADDR]``.

``eventseam relay`` with settings.EVENTSEAM: forwards pending outbox rows of Django's database to
Kafka until SIGTERM or SIGINT (the first stops gracefully, a second at once;
``manage.py eventseam_relay --help``).
"""

from __future__ import annotations

from engine.integrations.django.commands import ClickCommand


class Command(ClickCommand):
    """Run the outbox relay with this project's eventseam settings."""

    help = "Forward pending outbox rows to Kafka until SIGTERM or SIGINT (`eventseam relay`)."
    click_command = "engine.integrations.django.commands:relay"
