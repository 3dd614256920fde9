"""The canonical outbox table (SQLAlchemy Core), shared by every writer, the relay and migrations.

Column names follow Debezium's outbox event router where they fit (``id``, ``aggregatetype``,
``aggregateid``, ``type``, ``payload``), so a team can move to CDC later without a schema change.
``aggregatetype`` holds the publishing context's name.

Row life cycle (``status``)::

    local ──(kept for audit/replay, never relayed)──> purged by retention
    pending ──relay, broker ack──> published ──retention──> deleted
       └──K failed attempts──> parked ──operator: retry──> pending
                                  └────operator: discard──> deleted
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    Uuid,
    func,
    text,
)

NAMING_CONVENTION: Final = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Metadata of every eventseam table; Alembic and the Django migrations mirror it.
metadata = MetaData(naming_convention=NAMING_CONVENTION)

#: pg_advisory_xact_lock key every process takes before changing eventseam's schema on
#: PostgreSQL (the migrations, the NOTIFY trigger), so that concurrent starts serialize ("evsm").
SCHEMA_LOCK_KEY: Final = 0x6576736D

#: Auto-incrementing 64-bit key on PostgreSQL, SQLite's INTEGER PRIMARY KEY AUTOINCREMENT (rowid,
#: never reused) on SQLite.
SEQ_TYPE = BigInteger().with_variant(Integer(), "sqlite")


class Status:
    """Values of ``outbox.status``."""

    LOCAL: Final = "local"
    PENDING: Final = "pending"
    PUBLISHED: Final = "published"
    PARKED: Final = "parked"


outbox = Table(
    "eventseam_outbox",
    metadata,
    Column(
        "seq",
        SEQ_TYPE,
        primary_key=True,
        autoincrement=True,
        comment="write order; claim order within a slot",
    ),
    Column(
        "id",
        Uuid(as_uuid=True),
        nullable=False,
        unique=True,
        comment="event_id, the idempotency key",
    ),
    Column("aggregatetype", String(100), nullable=False, comment="publishing context"),
    Column("aggregateid", String(255), nullable=False, comment="aggregate id, the Kafka key"),
    Column("type", String(200), nullable=False, comment="wire name of the event"),
    Column("version", SmallInteger, nullable=False, comment="schema version of the event"),
    Column(
        "payload",
        LargeBinary,
        nullable=False,
        comment="JSON of the event's own data (the Kafka value)",
    ),
    Column(
        "headers",
        LargeBinary,
        nullable=False,
        comment="pre-encoded CloudEvents headers (codec.encode_headers)",
    ),
    Column(
        "keyhash",
        Integer,
        nullable=False,
        comment="murmur2(aggregateid) & 0x7fffffff, as Kafka partitions",
    ),
    Column("mode", String(8), nullable=False, comment="routing mode of the context when written"),
    Column("status", String(10), nullable=False, comment="local | pending | published | parked"),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text, nullable=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("published_at", DateTime(timezone=True), nullable=True),
    # AUTOINCREMENT: a plain rowid takes max(seq) + 1, so once the relay deleted the newest rows
    # the next ones reused their seq, below a scanning relay's cursor (out of order on the topic).
    sqlite_autoincrement=True,
)

Index(
    "ix_eventseam_outbox_pending",
    outbox.c.seq,
    postgresql_where=outbox.c.status == Status.PENDING,
    sqlite_where=outbox.c.status == Status.PENDING,
)
Index("ix_eventseam_outbox_status_created", outbox.c.status, outbox.c.created_at)
