"""Relay slot leases and relay membership (outbox/lease_table.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create eventseam_relay_lease (one row per slot) and eventseam_relay_member (live relays)."""
    op.create_table(
        "eventseam_relay_lease",
        sa.Column(
            "slot",
            sa.Integer(),
            primary_key=True,
            autoincrement=False,
            comment="keyhash % RelaySettings.slots",
        ),
        sa.Column(
            "owner", sa.String(200), nullable=True, comment="relay holding the slot; NULL when free"
        ),
        sa.Column(
            "expires_at",
            sa.Double(),
            nullable=False,
            comment="database epoch seconds when the lease lapses",
        ),
        sa.PrimaryKeyConstraint("slot", name="pk_eventseam_relay_lease"),
    )
    op.create_table(
        "eventseam_relay_member",
        sa.Column("owner", sa.String(200), nullable=False, comment="relay id (host:pid:random)"),
        sa.Column(
            "expires_at",
            sa.Double(),
            nullable=False,
            comment="database epoch seconds when the relay counts as dead",
        ),
        sa.PrimaryKeyConstraint("owner", name="pk_eventseam_relay_member"),
    )


def downgrade() -> None:
    """Drop both tables (relays re-create their leases when they start)."""
    op.drop_table("eventseam_relay_member")
    op.drop_table("eventseam_relay_lease")
