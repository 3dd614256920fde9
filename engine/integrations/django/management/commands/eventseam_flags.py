"""``manage.py eventseam_flags show | set CONTEXT MODE [--by WHO] | clear CONTEXT``.

``eventseam flags`` on this project's contexts and database (``manage.py eventseam_flags --help``).
"""

from __future__ import annotations

from engine.integrations.django.commands import ClickCommand


class Command(ClickCommand):
    """Show and flip each context's routing mode at runtime."""

    help = (
        "Show and change each context's routing mode (local, dual, broker) at runtime: "
        "`eventseam flags` on this project's contexts and database."
    )
    click_command = "engine.cli.flags:flags"
