"""``manage.py eventseam_keys generate | rotate --subject ID | show --subject ID``.

``eventseam keys`` on this project's settings (the master key) and database (``manage.py
eventseam_keys --help``).
"""

from __future__ import annotations

from engine.integrations.django.commands import ClickCommand


class Command(ClickCommand):
    """Personal-data keys: a new master key, key rotation, key versions of a subject."""

    help = (
        "Personal-data keys: a new master key, key rotation, key versions of a subject "
        "(`eventseam keys` on this project's settings and database)."
    )
    click_command = "engine.cli.keys:keys"
