"""``eventseam contexts``: the module map of the application.

    eventseam contexts                            a table: each context, its mode, the events it
                                                  owns, where they go, its handlers (durable
                                                  names) and what they subscribe to
    eventseam contexts --format mermaid           a Mermaid flowchart (contexts as nodes, edges
    eventseam contexts --format plantuml -o F     labelled by event), on stdout or into F

The application comes from ``eventseam --app module:function``: an object with ``.contexts`` (a
ContextMap) and ``.settings`` (EventSeamSettings), as EventSeam has. Modes are the effective
ones: the flag table when the application has a database whose table can be read (a warning on
stderr otherwise), settings with ``--no-flags``. Diagrams carry no modes. Exit status 0; 2 when
the application cannot be loaded.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from engine.cli.app_loader import AppLoadError, app_engine, load_app
from engine.contexts import ContextMap
from engine.errors import EngineError, database_error_line
from engine.flags import FlagSource
from engine.module_map import ModuleMap, build_module_map, render_mermaid, render_plantuml
from engine.settings import EventSeamSettings
from outbox.topics import TopicNamer

from .failure import fail

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy import Engine

    from engine.modes import Mode


@dataclass(frozen=True, slots=True)
class Application:
    """What the module map and the contracts commands need from the loaded application."""

    contexts: ContextMap
    settings: EventSeamSettings
    flags: FlagSource | None
    engine: Engine | None


@click.command("contexts")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "mermaid", "plantuml"]),
    default="table",
    show_default=True,
    help="a rich table, or diagram text for a README",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="write the diagram to this file instead of stdout",
)
@click.option(
    "--flags/--no-flags",
    "read_flags",
    default=True,
    show_default=True,
    help="read modes from the flag table (else from settings only)",
)
@click.pass_context
def contexts(ctx: click.Context, output_format: str, output: Path | None, read_flags: bool) -> None:
    """Show each context's events, handlers and mode, or a diagram of the event flows."""
    errors = Console(stderr=True, highlight=False)
    with loaded_application(ctx) as app:
        modes = effective_modes(app, errors, read_flags=read_flags)
        module_map = build_module_map(app.contexts, modes, topic_of=TopicNamer(app.settings.relay))
    if output_format == "table":
        Console(highlight=False).print(module_map_table(module_map))
        return
    text = render_mermaid(module_map) if output_format == "mermaid" else render_plantuml(module_map)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        errors.print(f"wrote {escape(str(output))}")


def module_map_table(module_map: ModuleMap) -> Table:
    """A rich table: context, mode, owns, publishes to, handlers with what they subscribe to."""
    table = Table(title="eventseam bounded contexts", title_justify="left", show_lines=True)
    table.add_column("context", no_wrap=True)
    table.add_column("mode", no_wrap=True)
    table.add_column("owns")
    table.add_column("publishes to")
    table.add_column("handlers (durable name <- events)")
    for node in module_map.contexts:
        handlers = [f"{h.name} <- {', '.join(str(e) for e in h.events)}" for h in node.handlers]
        table.add_row(
            escape(node.name),
            node.mode.value,
            escape("\n".join(str(e) for e in node.owns)) or "-",
            escape("\n".join(node.publishes_to)) or "-",
            escape("\n".join(handlers)) or "-",
        )
    return table


def effective_modes(app: Application, errors: Console, *, read_flags: bool) -> dict[str, Mode]:
    """Each context's mode: flag table > settings > local; settings when the table is unread."""
    names = app.contexts.names()
    if read_flags and app.flags is not None and app.engine is not None:
        try:
            with app.engine.connect() as connection:
                app.flags.refresh(connection, force=True)
        except SQLAlchemyError as exc:
            reason = database_error_line(exc)
            errors.print(
                f"[yellow]warning:[/] flag table not read ({escape(reason)}); modes from settings"
            )
        else:
            return {name: app.flags.mode_of(name) for name in names}
    return {name: app.settings.mode_of(name) for name in names}


@contextmanager
def loaded_application(ctx: click.Context) -> Iterator[Application]:
    """The application named by ``eventseam --app``; its database engine is disposed after."""
    app = _load(ctx)
    try:
        yield app
    finally:
        if app.engine is not None:
            app.engine.dispose()


def _load(ctx: click.Context) -> Application:
    try:
        app_path, app = load_app(
            ctx, factory_errors=(ImportError, AttributeError, ValueError, EngineError)
        )
    except AppLoadError as exc:
        fail(str(exc))
    contexts = getattr(app, "contexts", None)
    settings = getattr(app, "settings", None)
    if not isinstance(contexts, ContextMap) or not isinstance(settings, EventSeamSettings):
        fail(f"the application from {app_path!r} has no .contexts map and .settings")
    flags = getattr(app, "flags", None)
    return Application(
        contexts=contexts,
        settings=settings,
        flags=flags if isinstance(flags, FlagSource) else None,
        engine=app_engine(app),
    )
