"""``eventseam inbox purge``: delete inbox rows (and dead-letter marks) past the window, once.

    eventseam inbox purge                    # older than inbox.retention_seconds (default 7 days)
    eventseam inbox purge --older-than 30d   # or an ISO 8601 time: rows processed before it
    eventseam inbox purge --batch 1000       # rows per statement (default inbox.purge_batch)

The runner's dead-letter marks (engine.dead_letter_marks) share the inbox's window and go with
its rows. A running relay does this on its own (outbox.retention); the command is for
deployments that run no relay (every context local) and for a one-off clean-up, from cron for
example. Each batch commits on its own, so the table is never locked for long. The database is
``--url``, else the ``database_url`` setting; the settings are the application's (``flask
eventseam``, ``manage.py eventseam_inbox``, ``--app``) or, without one, the environment's. Exit
status 1 (with a message) when the database fails.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click
from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError

from engine import inbox as inbox_rows
from engine.cli.app_loader import command_settings
from engine.cli.options import url_option
from engine.errors import database_error_line
from engine.expiry import delete_in_batches

from .since import since_callback


@click.group()
def inbox() -> None:
    """Operate on the inbox (which handler applied which event)."""


@inbox.command()
@url_option
@click.option(
    "--older-than",
    "cutoff",
    metavar="TIME",
    callback=since_callback,
    help="Delete rows processed before TIME: a duration back from now (7d, 36h) or an ISO "
    "8601 time. Default: inbox.retention_seconds ago.",
)
@click.option("--batch", type=click.IntRange(min=1), default=None, help="Rows per statement.")
@click.pass_context
def purge(ctx: click.Context, url: str | None, cutoff: datetime | None, batch: int | None) -> None:
    """Delete inbox rows and dead-letter marks older than the retention window; print how many."""
    settings = command_settings(ctx)
    now = datetime.now(UTC)
    if cutoff is None:
        cutoff = now - timedelta(seconds=settings.inbox.retention_seconds)
    engine = create_engine(url or settings.database_url)
    try:
        with engine.connect() as connection:
            size = batch or settings.inbox.purge_batch
            deleted, marks = (
                delete_in_batches(connection, statement, cutoff, size)
                for statement in inbox_rows.window_purge_statements()
            )
    except SQLAlchemyError as exc:
        raise click.ClickException(f"database error: {database_error_line(exc)}") from exc
    finally:
        engine.dispose()
    click.echo(
        f"{deleted} inbox rows processed and {marks} dead-letter marks made"
        f" before {cutoff.isoformat()} deleted"
    )
