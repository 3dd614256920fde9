"""``eventseam keys``: personal-data keys (a new master key, rotation, key versions).

    eventseam keys generate                                  print a new master key (base64url)
    eventseam keys rotate --subject customer-42              new key version for new values
    eventseam keys show --subject customer-42                key versions and which are shredded

``rotate`` needs the master key, ``show`` only the database (``--database-url``, else the
setting): both from the application's settings (``flask eventseam``, ``manage.py
eventseam_keys``, ``--app``) or the environment's. Exit status: 0 on success, 1 when the
database or the master key cannot be used. Erasure: ``eventseam erase`` (engine.cli.erase).
"""

from __future__ import annotations

import click

from engine.cli.app_loader import command_database_url, command_settings
from engine.cli.erase import database_option, transaction
from engine.crypto_keys import SubjectKeys, key_versions
from engine.errors import PersonalDataError


@click.group()
def keys() -> None:
    """Personal-data keys: a new master key, key rotation, key versions of a subject."""


@keys.command()
def generate() -> None:
    """Print a new random master key (set it as EVENTSEAM_PERSONAL_DATA__MASTER_KEY)."""
    from engine.crypto import generate_master_key

    click.echo(generate_master_key())


@keys.command()
@click.option("--subject", required=True, help="data subject whose key to rotate")
@database_option
@click.pass_context
def rotate(ctx: click.Context, subject: str, database_url: str | None) -> None:
    """Add a new key version for a subject; older versions still open older values."""
    settings = command_settings(ctx)  # the master key and the database: one load
    try:
        subject_keys = SubjectKeys.from_settings(settings.personal_data)
    except PersonalDataError as exc:
        raise click.ClickException(str(exc)) from exc
    with transaction(database_url or settings.database_url) as connection:
        version = subject_keys.rotate(connection, subject)
    click.echo(f"rotated {subject!r}: new values use key version {version}")


@keys.command()
@click.option("--subject", required=True, help="data subject to show")
@database_option
@click.pass_context
def show(ctx: click.Context, subject: str, database_url: str | None) -> None:
    """List a subject's key versions (never the keys)."""
    with transaction(command_database_url(ctx, database_url)) as connection:
        versions = key_versions(connection, subject)
    if not versions:
        click.echo(f"{subject!r}: no keys")
    for version, shredded in versions:
        click.echo(f"{subject!r} key version {version}: {'shredded' if shredded else 'live'}")
