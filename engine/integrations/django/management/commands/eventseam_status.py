"""``manage.py eventseam_status [--json]``.

``eventseam status`` on this project's contexts, database and Kafka (``manage.py eventseam_status --help``).
"""

from __future__ import annotations

from engine.integrations.django.commands import ClickCommand


class Command(ClickCommand):
    """Where each context stands: mode, outbox backlog, parked rows, dead letters, consumer lag."""

    help = (
        "Show each context's mode, outbox backlog, oldest unpublished age, parked rows, "
        "dead letters and consumer lag: `eventseam status` on this project."
    )
    click_command = "engine.cli.status:status"
