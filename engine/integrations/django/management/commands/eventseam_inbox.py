"""``manage.py eventseam_inbox purge [--older-than TIME] [--batch N]``.

``eventseam inbox`` on this project's settings and database (``manage.py eventseam_inbox
--help``): inbox rows and dead-letter marks past the retention window, for a deployment that
runs no relay (every context local), from cron for example.
"""

from __future__ import annotations

from engine.integrations.django.commands import ClickCommand


class Command(ClickCommand):
    """Delete inbox rows (and dead-letter marks) older than the retention window."""

    help = (
        "Operate on the inbox (which handler applied which event): `eventseam inbox` on this "
        "project's settings and database."
    )
    click_command = "engine.cli.inbox:inbox"
