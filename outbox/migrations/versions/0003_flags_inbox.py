"""Runtime routing flags and the handler inbox.

Creates ``eventseam_flags`` (outbox/flag_table.py) and ``eventseam_inbox``
(outbox/inbox_table.py) exactly as their canonical tables define them; the drift test compares.

Revision ID: 0003
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create eventseam_flags and eventseam_inbox (+ the inbox retention index)."""
    op.create_table(
        "eventseam_flags",
        sa.Column("context", sa.String(100), nullable=False, comment="bounded context name"),
        sa.Column("mode", sa.String(8), nullable=False, comment="local | dual | broker"),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_by", sa.String(200), nullable=False, comment="who flipped it (operator, tool)"
        ),
        sa.CheckConstraint(
            "mode IN ('local', 'dual', 'broker')", name=op.f("ck_eventseam_flags_mode")
        ),
        sa.PrimaryKeyConstraint("context", name=op.f("pk_eventseam_flags")),
    )
    op.create_table(
        "eventseam_inbox",
        sa.Column(
            "handler",
            sa.String(200),
            nullable=False,
            comment="durable handler name (<context>.<name>)",
        ),
        sa.Column("event_id", sa.Uuid(), nullable=False, comment="the event's idempotency key"),
        sa.Column(
            "event_type",
            sa.String(200),
            nullable=True,
            comment="wire name of the event (diagnostics)",
        ),
        sa.Column(
            "context",
            sa.String(100),
            nullable=True,
            comment="context that published the event (diagnostics)",
        ),
        sa.Column(
            "processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("handler", "event_id", name=op.f("pk_eventseam_inbox")),
    )
    op.create_index(
        op.f("ix_eventseam_inbox_processed_at"), "eventseam_inbox", ["processed_at"], unique=False
    )


def downgrade() -> None:
    """Drop both tables."""
    op.drop_index(op.f("ix_eventseam_inbox_processed_at"), table_name="eventseam_inbox")
    op.drop_table("eventseam_inbox")
    op.drop_table("eventseam_flags")
