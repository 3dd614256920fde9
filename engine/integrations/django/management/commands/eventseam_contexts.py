"""``manage.py eventseam_contexts [--format table|mermaid|plantuml] [--output FILE]``.

``eventseam contexts`` on this project's bounded contexts (``manage.py eventseam_contexts
--help``): each context's events, handlers and mode, or a diagram.
"""

from __future__ import annotations

from engine.integrations.django.commands import ClickCommand


class Command(ClickCommand):
    """Show the module map: each context's events, handlers and mode."""

    help = (
        "Show each context's events, handlers and mode, or a diagram: `eventseam contexts` on "
        "this project."
    )
    click_command = "engine.cli.contexts:contexts"
