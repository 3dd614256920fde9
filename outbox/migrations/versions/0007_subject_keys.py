"""Subject keys for personal-data encryption (outbox/key_table.py).

Creates ``eventseam_subject_keys`` exactly as outbox/key_table.py defines it; the drift test
compares.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create eventseam_subject_keys (one row per subject and key version)."""
    op.create_table(
        "eventseam_subject_keys",
        sa.Column(
            "subject",
            sa.String(200),
            nullable=False,
            comment="data subject (e.g. a customer id)",
        ),
        sa.Column(
            "version",
            sa.Integer(),
            nullable=False,
            autoincrement=False,
            comment="key version, 1 up",
        ),
        sa.Column(
            "wrapped_key",
            sa.LargeBinary(),
            nullable=True,
            comment="nonce + AES-GCM(master key, data key); NULL once shredded",
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "shredded_at", sa.DateTime(timezone=True), nullable=True, comment="when it was erased"
        ),
        sa.PrimaryKeyConstraint("subject", "version", name=op.f("pk_eventseam_subject_keys")),
    )


def downgrade() -> None:
    """Drop eventseam_subject_keys (every subject key is lost: sealed values become unreadable)."""
    op.drop_table("eventseam_subject_keys")
