"""``eventseam check``: fail when a bounded context imports another context's internals.

Static: it reads the import graph of the contexts package (engine.boundaries) and runs no code
of the application. Exit status 0 when every boundary holds, 1 when some import crosses one
(each printed as ``importer:line -> imported``), 2 when the package cannot be found.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console

from engine.boundaries import DEFAULT_PACKAGE, find_violations
from engine.errors import BoundaryViolationError, ContextError

if TYPE_CHECKING:
    from collections.abc import Iterator

VIOLATIONS_EXIT = 1
NOT_FOUND_EXIT = 2


@click.command("check")
@click.option(
    "--package",
    default=DEFAULT_PACKAGE,
    show_default=True,
    help="package whose direct subpackages are the bounded contexts",
)
@click.option(
    "--path",
    "search_path",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path(),
    show_default=True,
    help="directory the package is imported from (put first on sys.path)",
)
def check(package: str, search_path: Path) -> None:
    """Check that contexts import only each other's published events modules."""
    console = Console(highlight=False)
    try:
        with _on_path(search_path):
            violations = find_violations(package)
    except ContextError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise click.exceptions.Exit(NOT_FOUND_EXIT) from exc
    if not violations:
        console.print(f"[green]Context boundaries of {package!r} hold.[/]")
        return
    error = BoundaryViolationError([str(v) for v in violations])
    console.print(f"[bold red]{len(violations)} boundary violation(s):[/]")
    for line in error.violations:
        console.print(f"  {line}", markup=False)
    console.print(
        "A context may import only another context's events module; publish an event instead."
    )
    raise click.exceptions.Exit(VIOLATIONS_EXIT)


@contextmanager
def _on_path(directory: Path) -> Iterator[None]:
    """Put ``directory`` first on sys.path for the duration of the block."""
    entry = str(directory.resolve())
    if entry in sys.path:
        yield
        return
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        sys.path.remove(entry)
