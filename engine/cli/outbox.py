"""``eventseam outbox``: operate on the outbox; ``outbox parked`` lists, retries or discards parked rows.

    eventseam outbox parked                  # same as `parked list`
    eventseam outbox parked list [--limit N]
    eventseam outbox parked retry EVENT_ID   # back to pending (attempts reset)
    eventseam outbox parked retry --all
    eventseam outbox parked discard EVENT_ID # delete for good

The database is ``--url``, else the ``database_url`` of the settings the command runs on
(engine.cli.app_loader.command_settings, as for ``eventseam db``). Exit status 1 (with a
message) when the row is not a parked row or the database fails.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError

from engine.cli.app_loader import command_database_url
from engine.cli.options import url_option
from engine.errors import database_error_line
from outbox import parked as parked_rows
from outbox.errors import RowNotFoundError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy import Engine


def _run(url: str | None, action: Callable[[Engine], str]) -> None:
    """Run ``action`` on the database; echo its message; turn failures into exit status 1."""
    engine = create_engine(command_database_url(click.get_current_context(), url))
    try:
        click.echo(action(engine))
    except RowNotFoundError as exc:
        raise click.ClickException(f"{exc} among parked rows") from exc
    except SQLAlchemyError as exc:
        raise click.ClickException(f"database error: {database_error_line(exc)}") from exc
    finally:
        engine.dispose()


def _table(rows: list[parked_rows.ParkedRow]) -> Iterator[str]:
    yield "EVENT ID                              CONTEXT     AGGREGATE             TYPE                      ATTEMPTS  ERROR"
    for row in rows:
        error = (row.last_error or "").replace("\n", " ")[:80]
        yield (
            f"{row.event_id!s:37} {row.context[:11]:11} {row.aggregate_id[:21]:21} "
            f"{row.event_type[:25]:25} {row.attempts:8}  {error}"
        )


@click.group()
def outbox() -> None:
    """Operate on the transactional outbox."""


@outbox.group(invoke_without_command=True)
@click.pass_context
def parked(ctx: click.Context) -> None:
    """Rows the relay gave up on: list (default), retry or discard them."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_command)


@parked.command("list")
@url_option
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1))
def list_command(url: str | None = None, limit: int = 100) -> None:
    """List parked rows, oldest first."""

    def show(engine: Engine) -> str:
        rows = parked_rows.list_parked(engine, limit=limit)
        return "\n".join(_table(rows)) if rows else "no parked rows"

    _run(url, show)


@parked.command()
@url_option
@click.argument("event_id", required=False)
@click.option("--all", "every", is_flag=True, help="Retry every parked row.")
def retry(url: str | None, event_id: str | None, every: bool) -> None:
    """Send a parked row (or --all) back to pending; the relay publishes it again."""
    if bool(event_id) == every:
        raise click.UsageError("give one EVENT_ID or --all")

    def send_back(engine: Engine) -> str:
        if every:
            return f"{parked_rows.retry_all_parked(engine)} parked rows back to pending"
        parked_rows.retry_parked(engine, str(event_id))
        return f"{event_id} back to pending"

    _run(url, send_back)


@parked.command()
@url_option
@click.argument("event_id")
def discard(url: str | None, event_id: str) -> None:
    """Delete a parked row for good (its event is never published)."""

    def remove(engine: Engine) -> str:
        parked_rows.discard_parked(engine, event_id)
        return f"{event_id} discarded"

    _run(url, remove)
