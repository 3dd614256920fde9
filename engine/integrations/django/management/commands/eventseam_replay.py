"""``manage.py eventseam_replay --context NAME --since TIME [--handler NAME] [--dry-run]``.

``eventseam replay`` on this project's contexts, database and Kafka (``manage.py
eventseam_replay --help``): retained events re-delivered to a context's handlers, in this
process, through a new EventSeam of its own (as ``eventseam_worker`` does); the inbox skips what
they applied before.
"""

from __future__ import annotations

from engine.integrations.django.commands import WORKER_APP_PATH, ClickCommand


class Command(ClickCommand):
    """Re-deliver events retained since a time to a context's handlers."""

    help = (
        "Re-deliver events retained since --since to the handlers of --context (the inbox "
        "skips what they applied): `eventseam replay` on this project."
    )
    click_command = "engine.cli.replay:replay"
    app_path = WORKER_APP_PATH
