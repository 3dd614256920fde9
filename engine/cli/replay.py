"""``eventseam replay --context NAME --since TIME``: re-deliver retained events to a context's handlers.

    eventseam replay --context shipping --since 2h                # the last two hours
    eventseam replay --context shipping --since 2026-11-28T04:00Z --handler shipping.create_label
    eventseam replay --context shipping --since 1d --dry-run      # count, apply nothing

The events are those engine.replay finds (outbox rows kept ``published``/``local``, and the
context topics on Kafka when bootstrap servers are set; ``--no-kafka`` skips them). Each is
applied, in this process, to every handler of the context that subscribes to its type, with the
inbox: an event a handler already applied is skipped, so replaying twice applies nothing the
second time. A progress bar runs on stderr (when it is a terminal); stdout gets the summary:
per handler, events delivered, already applied and failed, then each failure.

The application comes from ``eventseam --app module:function`` (an EventSeam with a database).
Exit status: 0 when nothing failed; 1 when a handler failed on an event, a record was
unreadable, or the database or Kafka could not be read; 2 for bad input (unknown context or
handler, a time that does not parse) or an application that cannot be loaded.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import anyio
import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from engine.cli import app_loader
from engine.cli.logging import configure_logging
from engine.cli.since import since_callback
from engine.contexts import ContextMap
from engine.errors import (
    ConsumeError,
    ContextError,
    HandlerError,
    SettingsError,
    database_error_line,
)
from engine.replay import ReplaySummary, Retained, retained_events
from engine.replay import replay as run_replay

from .failure import fail

if TYPE_CHECKING:
    from engine.redelivery import RedeliveryHost

#: Output width when stdout is not a terminal (rich would use 80 columns).
PIPED_WIDTH = 120
FAILED_EXIT = 1


@click.command()
@click.option("--context", "context", required=True, help="the context whose handlers receive")
@click.option(
    "--since",
    "since",
    required=True,
    metavar="TIME",
    callback=since_callback,
    help="ISO 8601 time (no zone: UTC) or a duration back from now: 30m, 2h, 1d",
)
@click.option("--handler", default=None, help="only this handler (durable name) of the context")
@click.option("--dry-run", is_flag=True, help="Count what would be delivered; apply nothing.")
@click.option("--no-kafka", is_flag=True, help="Read the outbox only, not the context topics.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def replay(
    ctx: click.Context,
    context: str,
    since: datetime,
    handler: str | None,
    dry_run: bool,
    no_kafka: bool,
    as_json: bool,
) -> None:
    """Re-deliver events retained since --since to the handlers of --context (inbox-safe)."""
    configure_logging("warning", json_logs=False)  # engine warnings to stderr, never stdout
    seam = load_seam(ctx)
    warn_past_inbox_window(seam.settings.inbox.retention_seconds, since)
    try:
        found, summary = anyio.run(
            _replay, seam, context, since, handler, dry_run, not no_kafka, backend="asyncio"
        )
    except (ContextError, HandlerError, SettingsError) as exc:
        fail(str(exc))
    except (ConsumeError, SQLAlchemyError) as exc:
        fail(f"cannot read what to replay: {database_error_line(exc)}", FAILED_EXIT)
    finally:
        app_loader.dispose_app(seam)
    if as_json:
        click.echo(json.dumps(summary_dict(found, summary), indent=2))
    else:
        console = Console(highlight=False)
        if not console.is_terminal:
            console.width = PIPED_WIDTH
        print_summary(console, found, summary)
    if summary.total.failed or found.unreadable:
        raise click.exceptions.Exit(FAILED_EXIT)


def warn_past_inbox_window(retention_seconds: float, since: datetime) -> None:
    """Warn on stderr when ``since`` reaches past the inbox window (applied rows may be purged)."""
    window_start = datetime.now(UTC) - timedelta(seconds=retention_seconds)
    if since < window_start:
        click.echo(
            f"warning: --since {since.isoformat()} is older than the inbox window "
            f"(inbox.retention_seconds = {retention_seconds:g}, rows processed before "
            f"{window_start.isoformat(timespec='seconds')} may be purged): events older than "
            "the window that a handler already applied can be applied again",
            err=True,
        )


async def _replay(
    seam: RedeliveryHost,
    context: str,
    since: datetime,
    handler: str | None,
    dry_run: bool,
    kafka: bool,
) -> tuple[Retained, ReplaySummary]:
    found = await retained_events(seam, context, since, handler=handler, kafka=kafka)
    console = Console(stderr=True)
    columns = (
        TextColumn(f"replaying to {context}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(
        *columns, console=console, transient=True, disable=not console.is_terminal
    ) as bar:
        task = bar.add_task("replay", total=found.deliveries)
        summary = await run_replay(
            seam, found, dry_run=dry_run, progress=lambda n: bar.advance(task, n)
        )
    return found, summary


def load_seam(ctx: click.Context) -> RedeliveryHost:
    """The EventSeam of ``eventseam --app module:function`` (exit 2 when it is not one)."""
    try:
        app_path, app = app_loader.load_app(ctx)
    except app_loader.AppLoadError as exc:
        fail(str(exc))
    needed = ("settings", "registry", "session_factory", "publish", "run", "join", "aclose")
    missing = [name for name in needed if not hasattr(app, name)]
    if missing or not isinstance(getattr(app, "contexts", None), ContextMap):
        fail(
            f"the application from {app_path!r} is not an EventSeam "
            f"(missing {', '.join(missing) or 'contexts'})"
        )
    seam: RedeliveryHost = app  # type: ignore[assignment]  # checked above: an EventSeam
    return seam


def print_summary(console: Console, found: Retained, summary: ReplaySummary) -> None:
    """The per-handler counts as a rich table, then failures and unreadable records."""
    sources = ", ".join(f"{name} {count}" for name, count in sorted(found.sources.items()))
    when = found.since.strftime("%Y-%m-%d %H:%M:%S UTC")
    mode = " (dry run: nothing applied)" if summary.dry_run else ""
    title = (
        f"replay to {found.context} of events since {when}{mode}: "
        f"{len(found.events)} events ({sources or 'none found'})"
    )
    console.print(title)
    table = Table()
    table.add_column("handler", no_wrap=True)
    delivered = "to deliver" if summary.dry_run else "delivered"
    for column in (delivered, "already applied", "failed"):
        table.add_column(column, justify="right", no_wrap=True)
    for name, counts in summary.handlers.items():
        table.add_row(name, *map(str, (counts.delivered, counts.already_applied, counts.failed)))
    total = summary.total
    table.add_row(
        "[bold]total[/]", *map(str, (total.delivered, total.already_applied, total.failed))
    )
    console.print(table)
    for failure in summary.failures:
        console.print(
            f"[red]failed[/] {failure.handler} {failure.event_type} {failure.event_id} "
            f"(aggregate {escape(failure.aggregate_id)}): {escape(failure.error or '')}"
        )
    for line in found.unreadable:
        console.print(f"[yellow]unreadable[/] {escape(line)}")


def summary_dict(found: Retained, summary: ReplaySummary) -> dict[str, object]:
    """The summary as JSON-ready data (``--json``)."""
    return {
        "context": found.context,
        "since": found.since.isoformat(),
        "dry_run": summary.dry_run,
        "events": len(found.events),
        "sources": dict(found.sources),
        "handlers": {
            name: {
                "delivered": counts.delivered,
                "already_applied": counts.already_applied,
                "failed": counts.failed,
            }
            for name, counts in summary.handlers.items()
        },
        "failures": [
            {
                "handler": failure.handler,
                "event_id": str(failure.event_id),
                "event_type": failure.event_type,
                "aggregate_id": failure.aggregate_id,
                "error": failure.error,
            }
            for failure in summary.failures
        ],
        "unreadable": found.unreadable,
    }
