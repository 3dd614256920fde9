"""``manage.py eventseam_acl [--format table|kafka-acls|json] ...``.

``eventseam acl`` on this project's contexts and settings (``manage.py eventseam_acl --help``):
the Kafka ACLs its relay and each context's workers need.
"""

from __future__ import annotations

from engine.integrations.django.commands import ClickCommand


class Command(ClickCommand):
    """Print the Kafka ACLs the relay and each context's workers need."""

    help = (
        "Print the Kafka ACLs the relay and each context's workers need: `eventseam acl` on "
        "this project."
    )
    click_command = "engine.cli.acl:acl"
