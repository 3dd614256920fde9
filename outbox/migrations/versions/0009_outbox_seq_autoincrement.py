"""SQLite: eventseam_outbox.seq never reuses a value (INTEGER PRIMARY KEY AUTOINCREMENT).

A plain ``INTEGER PRIMARY KEY`` takes ``max(seq) + 1``: once the relay deleted the newest rows, the
next rows reused their ``seq``, below the cursor of a relay in the middle of a scan, which then sent
an aggregate's later events before its earlier ones (docs/RELIABILITY.md, item 10). SQLite cannot
add AUTOINCREMENT to a table, so the table is rebuilt with its rows (stop the relays first: rows a
relay holds keep their ``seq``). Nothing changes on PostgreSQL, whose sequence never goes back.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | None = None
depends_on: str | None = None

_TABLE = "eventseam_outbox"
_OLD = "_eventseam_outbox_rebuild"


def _columns() -> list[sa.Column[object]]:
    """eventseam_outbox's columns as revision 0001 created them."""
    return [
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
            comment="write order; claim order within a slot",
        ),
        sa.Column(
            "id", sa.Uuid(as_uuid=True), nullable=False, comment="event_id, the idempotency key"
        ),
        sa.Column("aggregatetype", sa.String(100), nullable=False, comment="publishing context"),
        sa.Column(
            "aggregateid", sa.String(255), nullable=False, comment="aggregate id, the Kafka key"
        ),
        sa.Column("type", sa.String(200), nullable=False, comment="wire name of the event"),
        sa.Column(
            "version", sa.SmallInteger(), nullable=False, comment="schema version of the event"
        ),
        sa.Column(
            "payload",
            sa.LargeBinary(),
            nullable=False,
            comment="JSON of the event's own data (the Kafka value)",
        ),
        sa.Column(
            "headers",
            sa.LargeBinary(),
            nullable=False,
            comment="pre-encoded CloudEvents headers (codec.encode_headers)",
        ),
        sa.Column(
            "keyhash",
            sa.Integer(),
            nullable=False,
            comment="murmur2(aggregateid) & 0x7fffffff, as Kafka partitions",
        ),
        sa.Column(
            "mode", sa.String(8), nullable=False, comment="routing mode of the context when written"
        ),
        sa.Column(
            "status", sa.String(10), nullable=False, comment="local | pending | published | parked"
        ),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    ]


def _rebuild(*, autoincrement: bool) -> None:
    """Rebuild eventseam_outbox on SQLite, rows and indexes kept, with or without AUTOINCREMENT."""
    if op.get_bind().dialect.name != "sqlite":
        return
    op.drop_index("ix_eventseam_outbox_status_created", table_name=_TABLE)
    op.drop_index("ix_eventseam_outbox_pending", table_name=_TABLE)
    op.rename_table(_TABLE, _OLD)
    columns = _columns()
    op.create_table(
        _TABLE,
        *columns,
        sa.PrimaryKeyConstraint("seq", name="pk_eventseam_outbox"),
        sa.UniqueConstraint("id", name="uq_eventseam_outbox_id"),
        sqlite_autoincrement=autoincrement,
    )
    names = ", ".join(column.name for column in columns)
    op.execute(f"INSERT INTO {_TABLE} ({names}) SELECT {names} FROM {_OLD} ORDER BY seq")
    op.drop_table(_OLD)
    op.create_index(
        "ix_eventseam_outbox_pending",
        _TABLE,
        ["seq"],
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.create_index("ix_eventseam_outbox_status_created", _TABLE, ["status", "created_at"])


def upgrade() -> None:
    """SQLite: rebuild eventseam_outbox with ``seq INTEGER PRIMARY KEY AUTOINCREMENT``."""
    _rebuild(autoincrement=True)


def downgrade() -> None:
    """SQLite: rebuild eventseam_outbox with a plain ``INTEGER PRIMARY KEY`` (as in 0001)."""
    _rebuild(autoincrement=False)
