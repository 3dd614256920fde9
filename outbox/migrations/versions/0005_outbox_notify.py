"""PostgreSQL NOTIFY trigger that wakes relays when outbox rows are inserted (outbox/notify.py).

A statement-level AFTER INSERT trigger on eventseam_outbox calls
``pg_notify('eventseam_outbox', '')``. Nothing happens on other databases (relays poll there).
The SQL is spelled out here (not imported) so this revision never changes after release.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

INSTALL = (
    """
    CREATE OR REPLACE FUNCTION eventseam_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('eventseam_outbox', '');
        RETURN NULL;
    END;
    $$
    """,
    "DROP TRIGGER IF EXISTS eventseam_outbox_notify ON eventseam_outbox",
    "CREATE TRIGGER eventseam_outbox_notify AFTER INSERT ON eventseam_outbox "
    "FOR EACH STATEMENT EXECUTE FUNCTION eventseam_outbox_notify()",
)
UNINSTALL = (
    "DROP TRIGGER IF EXISTS eventseam_outbox_notify ON eventseam_outbox",
    "DROP FUNCTION IF EXISTS eventseam_outbox_notify()",
)


def upgrade() -> None:
    """Install the NOTIFY function and trigger on PostgreSQL."""
    if op.get_bind().dialect.name == "postgresql":
        for statement in INSTALL:
            op.execute(statement)


def downgrade() -> None:
    """Remove the trigger and its function on PostgreSQL."""
    if op.get_bind().dialect.name == "postgresql":
        for statement in UNINSTALL:
            op.execute(statement)
