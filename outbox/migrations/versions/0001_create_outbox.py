"""Create the eventseam_outbox table (outbox/table.py, first version).

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create eventseam_outbox with its unique id, the pending partial index and the status index."""
    op.create_table(
        "eventseam_outbox",
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
        sa.PrimaryKeyConstraint("seq", name="pk_eventseam_outbox"),
        sa.UniqueConstraint("id", name="uq_eventseam_outbox_id"),
    )
    op.create_index(
        "ix_eventseam_outbox_pending",
        "eventseam_outbox",
        ["seq"],
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_eventseam_outbox_status_created", "eventseam_outbox", ["status", "created_at"]
    )


def downgrade() -> None:
    """Drop eventseam_outbox (and the events it holds)."""
    op.drop_index("ix_eventseam_outbox_status_created", table_name="eventseam_outbox")
    op.drop_index("ix_eventseam_outbox_pending", table_name="eventseam_outbox")
    op.drop_table("eventseam_outbox")
