"""How a command refuses: ``Error: <message>`` on stderr and an exit status.

Stdout stays the command's output (a table, or JSON a script parses); the refusal goes to stderr,
in the words of click's own usage errors.
"""

from __future__ import annotations

from typing import Final, NoReturn

import click

#: Exit status of a refusal the user can fix (unknown context, unusable application...).
USAGE_EXIT: Final = 2


def fail(message: str, status: int = USAGE_EXIT) -> NoReturn:
    """Print ``Error: message`` on stderr and exit with ``status``."""
    click.echo(f"Error: {message}", err=True)
    raise click.exceptions.Exit(status)
