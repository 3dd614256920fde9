"""``eventseam status``: per context its mode, outbox backlog, parked rows, dead letters and lag.

    eventseam status                   tables for people (rich)
    eventseam status --json            the same figures for scripts (engine.status.Status.to_dict)
    eventseam status --no-kafka        database figures only

The application comes from ``eventseam --app module:function`` (an EventSeam: its contexts,
handlers and settings); the database is ``--database-url`` or the application's. Figures are
read once (engine.status.collect_status). Exit status: 0 when every source answered; 1 when the
database or Kafka could not be read (what could be read is still printed, and ``errors`` says
what failed); 2 when the application cannot be loaded.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import anyio
import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.cli import app_loader
from engine.contexts import ContextMap
from engine.flags import FlagSource
from engine.status import collect_status

from .failure import fail

if TYPE_CHECKING:
    from engine.status import ContextStatus, HandlerStatus, Status, StatusHost

#: Output width when stdout is not a terminal (rich would use 80 columns).
PIPED_WIDTH = 120
SOURCE_EXIT = 1


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of tables.")
@click.option(
    "--database-url", default=None, help="SQLAlchemy URL of the eventseam database [default: app]"
)
@click.option("--no-kafka", is_flag=True, help="Skip the broker (lag and dead-letter topics).")
@click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="seconds to wait for Kafka",
)
@click.pass_context
def status(
    ctx: click.Context, as_json: bool, database_url: str | None, no_kafka: bool, timeout: float
) -> None:
    """Show each context's mode, outbox backlog, parked rows, dead letters and consumer lag, and the
    relays."""
    host = load_host(ctx)
    try:
        report = anyio.run(_collect, host, database_url, not no_kafka, timeout, backend="asyncio")
    finally:
        app_loader.dispose_app(host)  # the application's engine: this process is done with it
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        console = Console(highlight=False)
        if not console.is_terminal:
            console.width = PIPED_WIDTH
        print_status(console, report)
    if report.errors:
        raise click.exceptions.Exit(SOURCE_EXIT)


async def _collect(host: StatusHost, database_url: str | None, kafka: bool, wait: float) -> Status:
    return await collect_status(host, database_url=database_url, kafka=kafka, kafka_wait=wait)


def load_host(ctx: click.Context) -> StatusHost:
    """The application's EventSeam, from ``eventseam --app module:function`` (exit 2 otherwise)."""
    try:
        app_path, app = app_loader.load_app(ctx)
    except app_loader.AppLoadError as exc:
        fail(str(exc))
    if not isinstance(getattr(app, "contexts", None), ContextMap) or not isinstance(
        getattr(app, "flags", None), FlagSource
    ):
        fail(f"the application from {app_path!r} is not an EventSeam (no contexts or flags)")
    host: StatusHost = app  # type: ignore[assignment]  # checked above: an EventSeam
    return host


def print_status(console: Console, report: Status) -> None:
    """The figures as rich tables (contexts, relays, then consumer groups when Kafka was read),
    errors."""
    console.print(_contexts_table(report))
    if report.relays is not None:
        console.print(_relays(report))
    handlers = [h for context in report.contexts for h in context.handlers if h.lag is not None]
    if handlers:
        console.print(_groups_table(handlers))
    elif report.kafka is None:
        console.print("consumer lag and dead-letter topics: not read (no Kafka bootstrap servers)")
    for error in report.errors:
        console.print(f"[yellow]not read:[/] {escape(error)}")


def _contexts_table(report: Status) -> Table:
    when = report.generated_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    table = Table(title=f"eventseam status, {when}", title_justify="left")
    table.add_column("context", no_wrap=True)
    table.add_column("mode (origin)", no_wrap=True)
    for column in ("backlog", "oldest pending", "parked", "dead letters", "bus letters"):
        table.add_column(column, justify="right", no_wrap=True)
    for context in report.contexts:
        table.add_row(
            context.name if context.known else f"{context.name} [yellow](unknown)[/]",
            _mode(context),
            _count(context.backlog),
            _age(context.oldest_pending_age_seconds),
            _count(context.parked),
            _count(context.dead_letters),
            _count(context.bus_dead_letters),
        )
    return table


def _relays(report: Status) -> Table | str:
    """The live relays with their slots; a warning line when none runs and rows wait."""
    figures = report.relays
    assert figures is not None
    if not figures.relays:
        waiting = sum(context.backlog or 0 for context in report.contexts)
        line = f"relays: none running ({figures.slots} slots free)"
        return f"[yellow]{line}: {waiting} pending rows wait[/]" if waiting else line
    title = f"relays: {len(figures.relays)} running, {figures.slots} slots, {figures.free} free"
    table = Table(title=title, title_justify="left")
    table.add_column("relay", no_wrap=True)
    table.add_column("slots", justify="right", no_wrap=True)
    table.add_column("membership lapses in", justify="right", no_wrap=True)
    for relay in figures.relays:
        table.add_row(escape(relay.owner), str(relay.slots), _age(relay.expires_in_seconds))
    return table


def _groups_table(handlers: list[HandlerStatus]) -> Table:
    prefix = handlers[0].group.removesuffix(handlers[0].name)
    title = f"consumer groups ({prefix}<handler>): lag = records not handled yet"
    table = Table(title=title, title_justify="left")
    table.add_column("handler", no_wrap=True)
    table.add_column("lag", justify="right", no_wrap=True)
    table.add_column("dead letters", justify="right", no_wrap=True)
    table.add_column("lag per partition")
    for handler in handlers:
        parts = ", ".join(f"{p.topic}/{p.partition}: {p.lag}" for p in handler.partitions)
        table.add_row(handler.name, _count(handler.lag), _count(handler.dead_letters), parts or "-")
    return table


def _mode(context: ContextStatus) -> str:
    if context.mode is None:
        return "-"
    return f"{context.mode} ({context.mode_origin})"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _age(seconds: float | None) -> str:
    """Seconds for people: 4.2 s, 12 min 5 s, 3 h 2 min; "-" when nothing is pending."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} d {hours % 24} h"
