"""Django migrations that run eventseam's shipped Alembic revisions, so both histories build one schema.

Each Django migration of this app runs one revision of ``outbox/migrations`` (the history SQLAlchemy
hosts run with ``eventseam db upgrade``)::

    operations = [RunAlembicRevision("0001")]

The revision's ``upgrade()`` (``downgrade()`` when migrating backwards) is rendered by Alembic in
offline mode for Django's database vendor, and every statement runs through Django's schema editor
on Django's own connection, inside the migration's transaction. No SQLAlchemy engine ever touches
Django's connection (measured: that silently rolls Django's writes back). ``sqlmigrate`` prints the
statements. The tables therefore equal the canonical ``outbox`` tables exactly as the Alembic
history does; the drift test in tests/django checks both vendors.

Each operation also keeps eventseam's version table (``eventseam_alembic_version``) at the
revision it ran, as ``eventseam db upgrade`` does, so the relay's and the worker's start-up check
(``outbox.migrate.require_schema``) sees a Django database's revision too; migrating the app to
``zero`` drops that table with the rest.

Contract for eventseam developers: a new Alembic revision needs a new Django migration running it
(tests/django fails until it exists), and revisions must render offline: branch on
``op.get_context().dialect.name``, never on ``op.get_bind()``.

The operation keeps no model state: the tables belong to eventseam, not to the Django ORM. Django
never writes these tables' DDL itself, and ``flush`` (TransactionTestCase) leaves their rows alone.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Final, Literal

from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from django.db import NotSupportedError, router
from django.db.migrations.operations.base import Operation

from outbox.migrate import VERSION_TABLE, alembic_config

if TYPE_CHECKING:
    from django.db.backends.base.schema import BaseDatabaseSchemaEditor
    from django.db.migrations.state import ProjectState

__all__ = ["VENDORS", "RunAlembicRevision", "render_revision", "version_statements"]

#: Django database vendors eventseam supports, and the SQLAlchemy dialect rendering their DDL.
VENDORS: Final[dict[str, str]] = {"postgresql": "postgresql", "sqlite": "sqlite"}

Direction = Literal["upgrade", "downgrade"]

#: Alembic's ``op`` proxy is process-global while a revision renders: one rendering at a time.
_render_lock = threading.Lock()


class _Statements:
    """The output buffer Alembic writes offline SQL to: one ``write`` per statement."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def write(self, text: str) -> None:
        statement = text.strip()
        if statement.endswith(";"):
            statement = statement[:-1].rstrip()
        if statement:
            self.statements.append(statement)

    def flush(self) -> None:
        """Nothing to flush (Alembic calls it after each statement)."""


def render_revision(revision: str, direction: Direction, vendor: str) -> list[str]:
    """The SQL statements of Alembic ``revision``'s ``upgrade``/``downgrade`` for a Django vendor.

    Raises NotSupportedError for a vendor eventseam does not support, LookupError for an unknown
    revision.
    """
    dialect = VENDORS.get(vendor)
    if dialect is None:
        raise NotSupportedError(
            f"eventseam's tables support PostgreSQL and SQLite, not Django's {vendor!r} backend"
        )
    script = ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    if script is None:  # pragma: no cover - get_revision raises for unknown ids
        raise LookupError(f"no eventseam Alembic revision {revision!r}")
    output = _Statements()
    context = MigrationContext.configure(
        dialect_name=dialect,
        # "named" leaves a literal % alone: the statements run without parameters.
        dialect_opts={"paramstyle": "named"},
        opts={"as_sql": True, "output_buffer": output},
    )
    with _render_lock, Operations.context(context):
        getattr(script.module, direction)()
    return output.statements


def version_statements(revision: str, direction: Direction) -> list[str]:
    """SQL that leaves eventseam's version table at ``revision`` (upgrade) or its predecessor.

    Downgrading the first revision drops the table. Revision ids are eventseam's own ("0001"...),
    checked against the history, so they are inlined.
    """
    script = ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    if script is None:  # pragma: no cover - get_revision raises for unknown ids
        raise LookupError(f"no eventseam Alembic revision {revision!r}")
    target = script.revision if direction == "upgrade" else script.down_revision
    if target is None:
        return [f"DROP TABLE IF EXISTS {VERSION_TABLE}"]
    if not isinstance(target, str) or not target.isalnum():  # a merge point, or an odd id
        raise LookupError(f"eventseam revision {revision!r} has no single plain parent: {target!r}")
    return [
        f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL, "
        f"CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY (version_num))",
        f"DELETE FROM {VERSION_TABLE}",
        f"INSERT INTO {VERSION_TABLE} (version_num) VALUES ('{target}')",
    ]


class RunAlembicRevision(Operation):
    """Run eventseam's Alembic ``revision`` on the migrated database (reversible; no model state)."""

    reversible = True
    reduces_to_sql = True
    atomic = True

    def __init__(self, revision: str) -> None:
        self.revision = revision

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        """How Django's migration writer spells this operation."""
        return (self.__class__.__qualname__, [self.revision], {})

    def state_forwards(self, app_label: str, state: ProjectState) -> None:
        """No model state: eventseam's tables are not ORM models."""

    def database_forwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        """Run the revision's ``upgrade`` (when routers allow this app on this database)."""
        self._run(app_label, schema_editor, "upgrade")

    def database_backwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        """Run the revision's ``downgrade`` (drops what the upgrade created, rows included)."""
        self._run(app_label, schema_editor, "downgrade")

    def describe(self) -> str:
        """One line for ``manage.py migrate --plan``."""
        return f"Run eventseam's Alembic revision {self.revision}"

    @property
    def migration_name_fragment(self) -> str:
        """Fragment Django uses when it names a migration after this operation."""
        return f"alembic_{self.revision}"

    def _run(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, direction: Direction
    ) -> None:
        connection = schema_editor.connection
        if not router.allow_migrate(connection.alias, app_label):
            return
        statements = render_revision(self.revision, direction, connection.vendor)
        for statement in statements + version_statements(self.revision, direction):
            schema_editor.execute(statement, params=None)
