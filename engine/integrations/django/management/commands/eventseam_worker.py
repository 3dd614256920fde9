"""``manage.py eventseam_worker --context NAME [--context ...] [--log-level LEVEL] [--json-logs]``.

``eventseam worker`` with this project's contexts and settings: runs the chosen contexts' handlers
from Kafka in this process until SIGTERM or SIGINT (``manage.py eventseam_worker --help``).
"""

from __future__ import annotations

from engine.integrations.django.commands import WORKER_APP_PATH, ClickCommand


class Command(ClickCommand):
    """Run bounded contexts' handlers from Kafka (a detached context)."""

    help = (
        "Run the handlers of each --context from Kafka until SIGTERM or SIGINT "
        "(`eventseam worker` on this project's contexts and settings)."
    )
    click_command = "engine.cli.worker:worker"
    app_path = WORKER_APP_PATH
