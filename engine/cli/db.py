"""``eventseam db``: create, upgrade, inspect and downgrade the eventseam schema (outbox.migrate).

The database is ``--url``, else the ``database_url`` of the settings the command runs on
(engine.cli.app_loader.command_settings: the application's under ``flask eventseam`` or
``--app``, else ``EVENTSEAM_DATABASE_URL`` / ``eventseam.toml``).
eventseam's Alembic history has its own version table and never touches the host's.
Exit status: 0 on success, 1 when the migration fails (the message says why).
"""

from __future__ import annotations

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from engine.cli.app_loader import command_database_url
from engine.cli.options import url_option
from outbox import migrate
from outbox.errors import MigrationError


def _shown(url: str) -> str:
    """``url`` with its password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable URL>"


@click.group()
def db() -> None:
    """Manage eventseam's tables (outbox, inbox, flags) with their own Alembic history."""


@db.command()
@url_option
@click.argument("revision", default="head")
@click.pass_context
def upgrade(ctx: click.Context, url: str | None, revision: str) -> None:
    """Upgrade the schema to REVISION (default: head, the newest)."""
    database = command_database_url(ctx, url)
    try:
        migrate.upgrade(database, revision)
        now = migrate.current(database)
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{_shown(database)}: eventseam schema at revision {now}")


@db.command()
@url_option
@click.pass_context
def current(ctx: click.Context, url: str | None) -> None:
    """Print the schema's current revision and the newest one shipped."""
    database = command_database_url(ctx, url)
    try:
        now = migrate.current(database)
        newest = migrate.head()
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from exc
    if now is None:
        state = "not created (run `eventseam db upgrade`)"
    elif now == newest:
        state = f"{now} (head)"
    else:
        state = f"{now} (head is {newest}; run `eventseam db upgrade`)"
    click.echo(f"{_shown(database)}: {state}")


@db.command()
@url_option
@click.argument("revision")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def downgrade(ctx: click.Context, url: str | None, revision: str, yes: bool) -> None:
    """Downgrade the schema to REVISION (`base` drops every eventseam table and its rows)."""
    database = command_database_url(ctx, url)
    if not yes:
        click.confirm(
            f"Downgrade {_shown(database)} to {revision}? Dropped tables lose their rows, "
            "including unpublished outbox events",
            abort=True,
        )
    try:
        migrate.downgrade(database, revision)
        now = migrate.current(database)
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{_shown(database)}: eventseam schema at revision {now or 'base'}")
