"""``manage.py eventseam_erase --subject ID [--subject ...]``.

``eventseam erase`` on this project's database (``manage.py eventseam_erase --help``): every
key version of each data subject shredded, so their sealed personal-data fields open as
``Erased`` everywhere (outbox, Kafka, dead letters).
"""

from __future__ import annotations

from engine.integrations.django.commands import ClickCommand


class Command(ClickCommand):
    """Crypto-shred data subjects."""

    help = (
        "Crypto-shred data subjects: their personal-data fields become unreadable everywhere "
        "(`eventseam erase` on this project's database)."
    )
    click_command = "engine.cli.erase:erase"
