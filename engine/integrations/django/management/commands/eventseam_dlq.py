"""``manage.py eventseam_dlq [list | show ID | replay ID... | discard ID...]``.

``eventseam dlq`` on this project's contexts, database and Kafka (``manage.py eventseam_dlq
--help``). A replay applies dead letters with the project's handlers, in this process, through
a new EventSeam of its own (as ``eventseam_worker`` does).
"""

from __future__ import annotations

from engine.integrations.django.commands import WORKER_APP_PATH, ClickCommand


class Command(ClickCommand):
    """Dead letters of the bus and of the dead-letter topics: list, show, replay or discard."""

    help = (
        "Dead letters: list (default), show, replay or discard them: `eventseam dlq` on this "
        "project."
    )
    click_command = "engine.cli.dlq:dlq"
    app_path = WORKER_APP_PATH
