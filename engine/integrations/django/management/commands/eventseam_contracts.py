"""``manage.py eventseam_contracts dump | check``.

``eventseam contracts`` on this project's bounded contexts (``manage.py eventseam_contracts
--help``): the AsyncAPI document and JSON Schemas of its events, and the compatibility check
against committed ones.
"""

from __future__ import annotations

from engine.integrations.django.commands import ClickCommand


class Command(ClickCommand):
    """Write the event contracts, or check the code against committed ones."""

    help = (
        "Event contracts: an AsyncAPI document and JSON Schemas, and a compatibility check: "
        "`eventseam contracts` on this project."
    )
    click_command = "engine.cli.contracts:contracts"
