"""Dead-letter tables: the bus's dead letters and resolved Kafka dead letters.

Creates ``eventseam_dead_letter`` and ``eventseam_dlq_resolved`` exactly as
outbox/dead_letter_table.py defines them; the drift test compares.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create eventseam_dead_letter (+ its handler index) and eventseam_dlq_resolved."""
    op.create_table(
        "eventseam_dead_letter",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True, comment="insertion order"),
        sa.Column("id", sa.Uuid(as_uuid=True), nullable=False, comment="DeadLetter.id"),
        sa.Column("handler", sa.String(200), nullable=False, comment="durable handler name"),
        sa.Column("event_id", sa.Uuid(as_uuid=True), nullable=False),
        sa.Column("event_type", sa.String(200), nullable=False, comment="wire name of the event"),
        sa.Column(
            "context", sa.String(100), nullable=False, comment="context that published the event"
        ),
        sa.Column("aggregateid", sa.String(255), nullable=False),
        sa.Column(
            "payload", sa.LargeBinary(), nullable=False, comment="JSON of the event's own data"
        ),
        sa.Column(
            "headers", sa.LargeBinary(), nullable=False, comment="CloudEvents headers (codec)"
        ),
        sa.Column("reason", sa.String(10), nullable=False, comment="failed | shutdown"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error_type", sa.String(300), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=False),
        sa.Column("traceback", sa.Text(), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_eventseam_dead_letter"),
        sa.UniqueConstraint("id", name="uq_eventseam_dead_letter_id"),
    )
    op.create_index("ix_eventseam_dead_letter_handler", "eventseam_dead_letter", ["handler", "seq"])
    op.create_table(
        "eventseam_dlq_resolved",
        sa.Column("topic", sa.String(249), nullable=False, comment="dead-letter topic"),
        sa.Column("partition_no", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("record_offset", _SEQ, nullable=False, autoincrement=False),
        sa.Column("handler", sa.String(200), nullable=True, comment="dlq_handler of the record"),
        sa.Column("event_id", sa.Uuid(as_uuid=True), nullable=True, comment="ce_id of the record"),
        sa.Column("action", sa.String(10), nullable=False, comment="replayed | discarded"),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "topic", "partition_no", "record_offset", name="pk_eventseam_dlq_resolved"
        ),
    )


def downgrade() -> None:
    """Drop both tables (the bus's persisted dead letters are lost)."""
    op.drop_table("eventseam_dlq_resolved")
    op.drop_index("ix_eventseam_dead_letter_handler", table_name="eventseam_dead_letter")
    op.drop_table("eventseam_dead_letter")
