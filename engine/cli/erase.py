"""``eventseam erase``: crypto-shred data subjects (their personal-data keys).

    eventseam erase --subject customer-42 [--subject ...]   shred every key version of a subject

After ``erase``, every sealed personal-data value of the subject (outbox, Kafka, dead letters)
opens as ``Erased``; the events' other fields stay readable. It needs only the database (not
the master key): ``--database-url``, else the ``database_url`` of the application's settings
(``flask eventseam``, ``manage.py eventseam_erase``) or of the environment's. Key rotation and key
versions: ``eventseam keys`` (engine.cli.keys). Exit status: 0 on success, 1 when the database
cannot be used.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

import click
from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError

from engine.cli.app_loader import command_database_url
from engine.crypto_keys import erase_subject
from engine.errors import SCHEMA_HINT, schema_missing

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy import Connection

database_option = click.option(
    "--database-url",
    default=None,
    help="SQLAlchemy URL of the eventseam database [default: settings]",
)


@contextmanager
def transaction(database_url: str) -> Iterator[Connection]:
    """One committed transaction on the eventseam database; click errors for database failures."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            yield connection
    except SQLAlchemyError as exc:
        hint = f"; {SCHEMA_HINT}" if schema_missing(exc) else ""  # no message: it may hold ids
        raise click.ClickException(
            f"the key table cannot be used ({type(exc).__name__}){hint}"
        ) from exc
    finally:
        engine.dispose()


@click.command()
@click.option(
    "--subject",
    "subjects",
    multiple=True,
    required=True,
    help="data subject to erase (e.g. a customer id); repeat for several",
)
@database_option
@click.pass_context
def erase(ctx: click.Context, subjects: tuple[str, ...], database_url: str | None) -> None:
    """Crypto-shred data subjects: their personal-data fields become unreadable everywhere."""
    with transaction(command_database_url(ctx, database_url)) as connection:
        shredded = {subject: erase_subject(connection, subject) for subject in subjects}
    for subject, count in shredded.items():
        if count:
            click.echo(f"erased {subject!r}: {count} key version(s) shredded")
        else:
            click.echo(f"erased {subject!r}: no live key (nothing sealed, or already erased)")
