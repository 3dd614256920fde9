"""``manage.py eventseam_parity --context NAME [--json] [--show N]``.

``eventseam parity`` on this project's contexts, database and Kafka (``manage.py eventseam_parity
--help``): what the local path and the Kafka path delivered to a ``dual`` context's subscribers.
"""

from __future__ import annotations

from engine.integrations.django.commands import ClickCommand


class Command(ClickCommand):
    """Compare the local path and the Kafka path of a context in dual mode, per handler."""

    help = (
        "Compare what the local path and the Kafka path delivered to each subscriber of a "
        "context's events: `eventseam parity` on this project."
    )
    click_command = "engine.cli.parity:parity"
