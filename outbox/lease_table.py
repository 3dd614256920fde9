"""Tables through which relay processes share the outbox: slot leases and relay membership.

Rows of the outbox are split into ``RelaySettings.slots`` slots by ``keyhash % slots``; each slot
is leased to one relay at a time, so one aggregate's rows are sent by one process, in order.

``eventseam_relay_lease``: one row per slot. ``owner`` is the relay holding it (NULL when free) and
``expires_at`` the database clock (epoch seconds) after which another relay may take it over.

``eventseam_relay_member``: one row per live relay, renewed with its leases. Relays split the
slots evenly between the members whose ``expires_at`` has not passed (fair share).

Times are epoch seconds read from the database clock, never from a relay host's clock, so hosts
with skewed clocks agree on when a lease has expired.
"""

from __future__ import annotations

from sqlalchemy import Column, Double, Integer, String, Table

from .table import metadata

relay_lease = Table(
    "eventseam_relay_lease",
    metadata,
    Column(
        "slot",
        Integer,
        primary_key=True,
        autoincrement=False,
        comment="keyhash % RelaySettings.slots",
    ),
    Column("owner", String(200), nullable=True, comment="relay holding the slot; NULL when free"),
    Column(
        "expires_at", Double, nullable=False, comment="database epoch seconds when the lease lapses"
    ),
)

relay_member = Table(
    "eventseam_relay_member",
    metadata,
    Column("owner", String(200), primary_key=True, comment="relay id (host:pid:random)"),
    Column(
        "expires_at",
        Double,
        nullable=False,
        comment="database epoch seconds when the relay counts as dead",
    ),
)
