"""``eventseam flags``: show and flip each context's routing mode at runtime.

    eventseam flags show                      context, effective mode, source, updated_at/by
    eventseam flags set orders dual           upsert the flag-table row (validated)
    eventseam flags clear orders              delete the row: back to settings or the default

Contexts and settings come from the application (``eventseam --app module:function``, whose
result has ``.contexts`` and ``.settings``); ``--contexts a,b,c`` replaces the application and
reads settings from the environment / TOML. The database is ``--database-url`` or the settings'
``database_url``. Exit status: 0 on success, 1 when the database cannot be read or written,
2 for an unknown context or mode, or an application that cannot be loaded.
"""

from __future__ import annotations

import getpass
import socket
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

import click
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from engine.cli.app_loader import AppLoadError, dispose_app, load_app
from engine.contexts import ContextMap
from engine.errors import SettingsError, UnknownContextError, database_error_line
from engine.flags import FlagOrigin, FlagSource, FlagState
from engine.settings import EventSeamSettings, load_settings

from .failure import fail

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy import Connection

_T = TypeVar("_T")

DATABASE_EXIT = 1

_database_option = click.option(
    "--database-url",
    default=None,
    help="SQLAlchemy URL of the eventseam database [default: settings]",
)
_contexts_option = click.option(
    "--contexts",
    "context_names",
    default=None,
    help="comma-separated context names, used instead of loading the application (--app)",
)


@click.group()
def flags() -> None:
    """Show and change each context's routing mode (local, dual, broker) at runtime."""


@flags.command("show")
@_database_option
@_contexts_option
@click.pass_context
def show(ctx: click.Context, database_url: str | None, context_names: str | None) -> None:
    """List every context with its effective mode and where that mode comes from."""
    console = Console(highlight=False)
    source, url = _flag_source(ctx, context_names, database_url)
    with _database(url, "read flags from") as connection:
        source.refresh(connection, force=True)
    console.print(flags_table(source.states()))


@flags.command("set")
@click.argument("context")
@click.argument("mode")
@click.option(
    "--by", default=None, help="who flips it, recorded in updated_by [default: user@host]"
)
@_database_option
@_contexts_option
@click.pass_context
def set_(
    ctx: click.Context,
    context: str,
    mode: str,
    by: str | None,
    database_url: str | None,
    context_names: str | None,
) -> None:
    """Set CONTEXT's routing MODE (local, dual or broker) in the flag table."""
    console = Console(highlight=False)
    source, url = _flag_source(ctx, context_names, database_url)
    chosen = _guard(lambda: source.validate(context, mode))
    author = by or _default_author()
    with _database(url, "write flags to") as connection:
        source.refresh(connection, force=True)
        before = source.mode_of(context)
        source.set_mode(connection, context, chosen, by=author)
    console.print(
        f"{context}: {before.value} -> [bold]{chosen.value}[/] (table, by {author}); "
        f"running processes follow within {source.interval:g} s"
    )


@flags.command("clear")
@click.argument("context")
@_database_option
@_contexts_option
@click.pass_context
def clear(
    ctx: click.Context, context: str, database_url: str | None, context_names: str | None
) -> None:
    """Delete CONTEXT's flag-table row: its mode falls back to settings or the default."""
    console = Console(highlight=False)
    source, url = _flag_source(ctx, context_names, database_url)
    _guard(lambda: source.check_context(context))
    with _database(url, "write flags to") as connection:
        existed = source.clear_mode(connection, context)
    if existed:
        console.print(f"{context}: table row removed; settings or the default decide its mode")
    else:
        console.print(f"{context}: no table row; nothing to clear")


def flags_table(states: list[FlagState]) -> Table:
    """A rich table of flag states: context, mode, source, updated_at (UTC), updated_by."""
    table = Table(title="eventseam routing flags", title_justify="left")
    table.add_column("context", no_wrap=True)
    table.add_column("mode", no_wrap=True)
    table.add_column("source", no_wrap=True)
    table.add_column("updated_at (UTC)", no_wrap=True)
    table.add_column("updated_by")
    for state in states:
        origin = state.origin.value
        if not state.known:
            origin = "[yellow]table: unknown context, ignored[/]"
        elif state.origin is FlagOrigin.TABLE:
            origin = f"[bold]{origin}[/]"
        when = state.updated_at.strftime("%Y-%m-%d %H:%M:%S") if state.updated_at else "-"
        table.add_row(state.context, state.mode.value, origin, when, state.updated_by or "-")
    return table


def _flag_source(
    ctx: click.Context, context_names: str | None, database_url: str | None
) -> tuple[FlagSource, str]:
    """The FlagSource of the application (or of ``--contexts``) and the database URL."""
    if context_names is not None:
        names = [name.strip() for name in context_names.split(",") if name.strip()]
        settings = _guard(load_settings)
    else:
        names, settings = _load_app(ctx)
    source = _guard(lambda: FlagSource(settings, names))
    return source, database_url or settings.database_url


def _load_app(ctx: click.Context) -> tuple[list[str], EventSeamSettings]:
    """Context names and settings of the application named by ``eventseam --app``."""
    try:
        app_path, app = load_app(ctx)
    except AppLoadError as exc:
        hint = " or --contexts a,b" if exc.app_path is None else "; or pass --contexts a,b"
        fail(f"{exc}{hint}")
    dispose_app(app)  # only its contexts and settings are used
    contexts = getattr(app, "contexts", None)
    if isinstance(contexts, ContextMap):
        names = contexts.names()
    elif contexts is not None:
        names = [item if isinstance(item, str) else str(item.name) for item in contexts]
    else:
        fail(f"the application from {app_path!r} has no .contexts")
    settings = getattr(app, "settings", None)
    if not isinstance(settings, EventSeamSettings):
        settings = _guard(load_settings)
    return names, settings


def _guard(action: Callable[[], _T]) -> _T:
    """Run ``action``; an unknown context or mode, or invalid settings, exits with status 2."""
    try:
        return action()
    except (UnknownContextError, SettingsError) as exc:
        fail(str(exc))
    except ValueError as exc:  # pydantic ValidationError from load_settings
        fail(f"invalid eventseam settings: {exc}")


@contextmanager
def _database(url: str, verb: str) -> Iterator[Connection]:
    """A connection in a transaction committed on success; database errors exit with status 1."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            yield connection
    except SQLAlchemyError as exc:
        shown = make_url(url).render_as_string(hide_password=True)
        fail(f"cannot {verb} {shown}: {database_error_line(exc)}", DATABASE_EXIT)
    finally:
        engine.dispose()


def _default_author() -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
