"""``eventseam parity --context NAME``: did the Kafka path deliver what the local path delivered?

For every handler subscribed to the context's events it prints how many events each path
delivered, the consumer group's lag and the event ids missing on either side, with the reason
(see engine.parity for the data sources). Run it while the context is in ``dual`` mode and flip
it to ``broker`` once it says "in parity"; run it again after detaching a context.

    eventseam parity --context orders            a table; exit 0 in parity, 1 otherwise
    eventseam parity --context orders --json     the same as JSON

The application (contexts, settings, database) comes from ``eventseam --app module:function``.
Exit status: 0 in parity, 1 when an event is missing on a path (lag included), 2 for an unknown
context, missing Kafka settings or an application that cannot be loaded, 3 when the database or
the broker cannot be read.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import anyio
import click
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from engine.cli.app_loader import dispose_app
from engine.cli.worker import load_app
from engine.errors import ConsumeError, SettingsError, UnknownContextError, database_error_line
from engine.flags import FlagSource
from engine.parity import ContextParity, HandlerParity, context_parity

from .failure import fail

if TYPE_CHECKING:
    from engine.parity import ParityHost

DIFFERENCE_EXIT = 1
UNREADABLE_EXIT = 3
#: Output width when stdout is not a terminal (rich would use 80 columns).
PIPED_WIDTH = 130


@click.command()
@click.option("--context", "context", required=True, help="the context whose events to check")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.option(
    "--show",
    default=5,
    show_default=True,
    type=click.IntRange(min=0),
    help="missing event ids listed per handler and path",
)
@click.pass_context
def parity(ctx: click.Context, context: str, as_json: bool, show: int) -> None:
    """Compare what the local path and the Kafka path delivered to each handler of CONTEXT's events."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = PIPED_WIDTH
    host = _host(ctx)
    try:
        report = anyio.run(_report, host, context, backend="asyncio")
    except (UnknownContextError, SettingsError) as exc:
        fail(str(exc))
    except ConsumeError as exc:
        fail(f"cannot read the broker: {exc}", UNREADABLE_EXIT)
    except SQLAlchemyError as exc:
        fail(f"cannot read the database: {database_error_line(exc)}", UNREADABLE_EXIT)
    finally:
        dispose_app(host)
    if as_json:
        click.echo(json.dumps(as_dict(report, show), indent=2))
    else:
        print_report(console, report, show)
    if not report.ok:
        raise click.exceptions.Exit(DIFFERENCE_EXIT)


async def _report(host: ParityHost, context: str) -> ContextParity:
    flags = getattr(host, "flags", None)
    sessions = host.session_factory
    if isinstance(flags, FlagSource) and sessions is not None:
        with sessions() as session:  # the mode operators set, not only the settings'
            flags.refresh(session, force=True)
    return await context_parity(host, context)


def _host(ctx: click.Context) -> ParityHost:
    app = load_app(ctx)
    if not callable(getattr(app, "mode_of", None)):
        fail("the application has no mode_of: is it an EventSeam?")
    host: ParityHost = app  # type: ignore[assignment]  # checked above: an EventSeam
    return host


def print_report(console: Console, report: ContextParity, show: int) -> None:
    """The report as a rich table, then the missing ids and a verdict line."""
    kept = ", ".join(f"{key} {count}" for key, count in sorted(report.outbox.items())) or "none"
    console.print(
        f"[bold]parity of {report.context}[/] (mode {report.mode.value}; topics "
        f"{', '.join(report.topics)}; outbox rows kept: {kept})"
    )
    console.print(handlers_table(report))
    for handler in report.handlers:
        for label, missing in (
            ("missing locally", handler.missing_locally),
            ("missing on Kafka", handler.missing_on_kafka),
        ):
            if missing and show:
                listed = ", ".join(f"{m.event_id} ({m.reason.value})" for m in missing[:show])
                more = f" and {len(missing) - show} more" if len(missing) > show else ""
                console.print(f"  {handler.handler} {label}: {listed}{more}")
    if report.ok:
        console.print("[green]in parity: every path delivered every event it carries (lag 0)[/]")
    else:
        console.print("[red]not in parity: events are missing on a path (see above)[/]")


def handlers_table(report: ContextParity) -> Table:
    """One row per handler: where it runs, each path's deliveries, lag and what is missing."""
    table = Table(title_justify="left")
    for column in ("handler", "runs", "local path", "Kafka path", "lag"):
        table.add_column(column, no_wrap=True)
    table.add_column("missing (reason)")
    for handler in report.handlers:
        table.add_row(
            handler.handler,
            "worker (detached)" if handler.detached else "in-process",
            "-" if handler.detached else f"{handler.local_delivered}/{handler.local_expected}",
            f"{handler.kafka_delivered}/{handler.kafka_expected}",
            str(handler.lag),
            _missing(handler),
        )
    return table


def _missing(handler: HandlerParity) -> str:
    reasons = handler.reasons()
    if not reasons:
        return "[green]none[/]"
    return ", ".join(f"{count} {reason.value}" for reason, count in sorted(reasons.items()))


def as_dict(report: ContextParity, show: int) -> dict[str, Any]:
    """The report as JSON-ready data (``show`` missing ids per handler and path)."""
    return {
        "context": report.context,
        "mode": report.mode.value,
        "topics": list(report.topics),
        "outbox": dict(report.outbox),
        "ok": report.ok,
        "handlers": [
            {
                "handler": h.handler,
                "group": h.group,
                "detached": h.detached,
                "event_types": list(h.event_types),
                "local": {"delivered": h.local_delivered, "expected": h.local_expected},
                "kafka": {"delivered": h.kafka_delivered, "expected": h.kafka_expected},
                "applied": h.applied,
                "lag": h.lag,
                "missing": {reason.value: count for reason, count in h.reasons().items()},
                "missing_locally": [str(m.event_id) for m in h.missing_locally[:show]],
                "missing_on_kafka": [
                    {"event_id": str(m.event_id), "reason": m.reason.value}
                    for m in h.missing_on_kafka[:show]
                ],
            }
            for h in report.handlers
        ],
    }
