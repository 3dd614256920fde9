"""Django's migrations of eventseam's tables: no drift from the canonical tables, reversible."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from django.core.management import call_command
from django.db import connections, transaction
from django.db.migrations.loader import MigrationLoader
from django.test import override_settings
from sqlalchemy import MetaData, Table, create_engine, make_url, text

from engine.integrations.django import publish
from engine.integrations.django.conf import database_url
from engine.integrations.django.schema import RunAlembicRevision
from outbox import migrate
from outbox.errors import SchemaMissingError
from outbox.table import NAMING_CONVENTION
from tests.django import settings as test_settings
from tests.django.shop.events import OrderPlaced
from tests.integration.test_migrations import eventseam_tables, schema_of

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def canonical_metadata() -> MetaData:
    """The canonical tables the shipped history builds (migrate.TABLE_MODULES), on a MetaData of their own.

    A copy, so tables of other modules imported by other tests never join the comparison.
    """
    shared = migrate.schema_metadata()
    copy = MetaData(naming_convention=NAMING_CONVENTION)
    for name in migrate.TABLE_MODULES:
        for value in vars(importlib.import_module(name)).values():
            if isinstance(value, Table) and value.metadata is shared:
                value.to_metadata(copy)
    return copy


def migrated_url(alias: str) -> str:
    url = database_url(alias)
    assert url is not None
    return url


@pytest.fixture
def reference_url(alias: str, tmp_path: Path) -> Iterator[str]:
    """A fresh database of the alias's kind, for ``metadata.create_all``."""
    url = make_url(migrated_url(alias))
    if url.get_backend_name() == "sqlite":
        yield f"sqlite:///{tmp_path / 'reference.db'}"
        return
    name = f"{url.database}_ref"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def assert_no_drift(alias: str, reference_url: str) -> None:
    """The alias's eventseam tables equal ``create_all`` of the canonical tables, to the index DDL."""
    metadata = canonical_metadata()
    migrated = create_engine(migrated_url(alias))
    reference = create_engine(reference_url)
    try:
        metadata.create_all(reference)
        with migrated.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "compare_server_default": True,
                    "compare_type": True,
                    "include_name": lambda name, kind, parent: (
                        kind != "table" or name in metadata.tables
                    ),
                },
            )
            assert compare_metadata(context, metadata) == []
            assert eventseam_tables(connection) == {*metadata.tables, migrate.VERSION_TABLE}
            migrated_schema = schema_of(connection)
        with reference.connect() as connection:
            assert migrated_schema == schema_of(connection)
        assert "WHERE" in migrated_schema["index_ddl"]["ix_eventseam_outbox_pending"].upper()
    finally:
        migrated.dispose()
        reference.dispose()


def test_migrate_has_no_drift_from_the_canonical_tables(alias: str, reference_url: str) -> None:
    """After `manage.py migrate` the schema equals the canonical tables: autogenerate and the inspector agree."""
    assert_no_drift(alias, reference_url)


def test_migrations_reverse_and_apply_again(alias: str) -> None:
    """`migrate eventseam zero` drops the tables; migrating again recreates them, ready for writes."""
    engine = create_engine(migrated_url(alias))
    try:
        call_command("migrate", "eventseam", "zero", database=alias, verbosity=0)
        with engine.connect() as connection:
            assert eventseam_tables(connection) == set()
        call_command("migrate", "eventseam", "0007", database=alias, verbosity=0)
        assert migrate.check_schema(engine).current == "0008"  # Django 0007 runs Alembic 0008
        call_command("migrate", "eventseam", database=alias, verbosity=0)
        with engine.connect() as connection:
            tables = eventseam_tables(connection)
        assert tables == {*canonical_metadata().tables, migrate.VERSION_TABLE}
        # The relay's and the worker's start-up check sees the Django-migrated revision.
        assert migrate.check_schema(engine).state is migrate.SchemaState.CURRENT
    finally:
        engine.dispose()
    with transaction.atomic(using=alias):
        publish(OrderPlaced(aggregate_id="M1", number="M1"), using=alias)
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT aggregateid FROM eventseam_outbox")
        assert cursor.fetchall() == [("M1",)]


def test_publishing_before_migrate_fails_naming_the_command(alias: str) -> None:
    """Before `migrate`, the first publish fails with SchemaMissingError naming `manage.py migrate`."""
    call_command("migrate", "eventseam", "zero", database=alias, verbosity=0)
    try:
        with (
            override_settings(EVENTSEAM={**test_settings.EVENTSEAM, "database": alias}),
            pytest.raises(SchemaMissingError) as raised,
            transaction.atomic(using=alias),
        ):
            publish(OrderPlaced(aggregate_id="M2", number="M2"), using=alias)
    finally:
        call_command("migrate", "eventseam", database=alias, verbosity=0)
    assert raised.value.table == "eventseam_flags"
    assert "`python manage.py migrate`" in str(raised.value)


def test_every_alembic_revision_has_a_django_migration() -> None:
    """Each revision of the shipped Alembic history is run by exactly one Django migration."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    ran = [
        operation.revision
        for (app, _), migration in loader.disk_migrations.items()
        if app == "eventseam"
        for operation in migration.operations
        if isinstance(operation, RunAlembicRevision)
    ]
    history = [
        script.revision
        for script in ScriptDirectory.from_config(migrate.alembic_config()).walk_revisions()
    ]
    missing = sorted(set(history) - set(ran))
    assert missing == [], (
        f"Alembic revision(s) {missing} have no Django migration: add "
        "engine/integrations/django/migrations/NNNN_<name>.py with "
        "operations = [RunAlembicRevision('<revision>')]"
    )
    assert sorted(ran) == sorted(history)


def test_sqlmigrate_prints_the_ddl(alias: str) -> None:
    """`sqlmigrate` shows the statements a migration runs, rendered for the alias's vendor."""
    sql = call_command("sqlmigrate", "eventseam", "0001_outbox", database=alias)
    assert "CREATE TABLE eventseam_outbox" in sql
    assert "ix_eventseam_outbox_pending" in sql


def test_no_model_changes_are_pending() -> None:
    """The app has no model state, so makemigrations finds nothing to write for it."""
    call_command("makemigrations", "eventseam", check=True, dry_run=True, verbosity=0)
