"""Alembic environment of the eventseam outbox history; run by ``outbox.migrate``, not the host.

It migrates the connection that ``outbox.migrate`` puts in ``config.attributes["connection"]``,
records revisions in ``eventseam_alembic_version`` and only ever looks at ``eventseam_*`` tables
(so autogenerate never proposes to drop the host's tables). On PostgreSQL a transaction-scoped
advisory lock serializes concurrent upgrades (several app instances starting at once).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alembic import context
from sqlalchemy import Connection, text

from outbox.errors import MigrationError
from outbox.migrate import VERSION_TABLE, schema_metadata
from outbox.table import SCHEMA_LOCK_KEY

if TYPE_CHECKING:
    from alembic.runtime.environment import NameFilterParentNames, NameFilterType


def include_name(
    name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
) -> bool:
    """Autogenerate looks at eventseam's own tables only."""
    return type_ != "table" or (name or "").startswith("eventseam_")


def run_migrations(connection: Connection) -> None:
    """Run the pending revisions on ``connection``, in its transaction when one is open."""
    context.configure(
        connection=connection,
        target_metadata=schema_metadata(),
        version_table=VERSION_TABLE,
        include_name=include_name,
        compare_server_default=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
        context.run_migrations()


def main() -> None:
    """Entry point Alembic calls when it loads this file."""
    if context.is_offline_mode():
        raise MigrationError("the outbox migrations run online only; use outbox.migrate.upgrade()")
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise MigrationError(
            "run the outbox migrations with outbox.migrate.upgrade() or `eventseam db upgrade`, "
            "not with the alembic command"
        )
    run_migrations(connection)


main()
