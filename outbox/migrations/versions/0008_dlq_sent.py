"""Dead-letter marks of the consumer runner (outbox/dead_letter_table.py ``dlq_sent``).

Creates ``eventseam_dlq_sent`` exactly as outbox/dead_letter_table.py defines it; the drift test
compares.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create eventseam_dlq_sent (+ its marked_at index, for retention)."""
    op.create_table(
        "eventseam_dlq_sent",
        sa.Column("handler", sa.String(200), nullable=False, comment="durable handler name"),
        sa.Column(
            "topic", sa.String(249), nullable=False, comment="topic the record was read from"
        ),
        sa.Column("partition_no", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("record_offset", _SEQ, nullable=False, autoincrement=False),
        sa.Column("event_id", sa.String(100), nullable=True, comment="ce_id header of the record"),
        sa.Column("dead_letter_topic", sa.String(249), nullable=False),
        sa.Column("state", sa.String(10), nullable=False, comment="sending | sent"),
        sa.Column("marked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "handler", "topic", "partition_no", "record_offset", name="pk_eventseam_dlq_sent"
        ),
    )
    op.create_index("ix_eventseam_dlq_sent_marked_at", "eventseam_dlq_sent", ["marked_at"])


def downgrade() -> None:
    """Drop eventseam_dlq_sent (a worker killed mid dead-lettering may then write a duplicate)."""
    op.drop_index("ix_eventseam_dlq_sent_marked_at", table_name="eventseam_dlq_sent")
    op.drop_table("eventseam_dlq_sent")
