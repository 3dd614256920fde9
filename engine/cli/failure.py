"""How a command refuses: ``Error: <message>`` on stderr and an exit status.

Stdout stays the command's output (a table, or JSON a script parses); the refusal goes to stderr,
in the words of click's own usage errors. A refusal is a ClickException with its own exit
status, so under ``manage.py`` (engine.integrations.django.commands.run_click) it becomes a
CommandError carrying the same message and status.
"""

from __future__ import annotations

from typing import Final, NoReturn

import click

#: Exit status of a refusal the user can fix (unknown context, unusable application...).
USAGE_EXIT: Final = 2


class Refusal(click.ClickException):
    """A refusal: click prints ``Error: <message>`` on stderr and exits with ``exit_code``."""

    def __init__(self, message: str, status: int = USAGE_EXIT) -> None:
        super().__init__(message)
        # click's stubs declare exit_code a ClassVar; click reads it from the instance
        self.exit_code = status  # type: ignore[misc]


def fail(message: str, status: int = USAGE_EXIT) -> NoReturn:
    """Refuse with ``message`` and exit status ``status`` (raises Refusal)."""
    raise Refusal(message, status)
