"""Dead-letter tables: the bus's dead letters, and what operators did with Kafka dead letters.

``eventseam_dead_letter``: one row per dead letter of the in-memory bus (engine.dead_letters),
written by engine.dead_letter_db.SqlDeadLetterStore when the seam has a database, so the
``eventseam dlq`` commands of another process can list, replay and discard them. The event is
kept as the outbox keeps it (key, JSON value, pre-encoded CloudEvents headers), so it decodes
(and upcasts) like any record. A row is deleted when its letter is replayed or discarded.

``eventseam_dlq_resolved``: one row per record of a Kafka dead-letter topic (engine.
dead_letter_topic) that an operator replayed or discarded. Kafka cannot delete one record, so
``eventseam dlq list`` hides the records named here instead.

``eventseam_dlq_sent``: one row per record the consumer runner dead-lettered, per handler
(engine.dead_letter_marks): ``sending`` before the dead-letter record is produced, ``sent`` once
the broker acknowledged it, so a worker killed before its offset commit never writes it twice.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import Column, DateTime, Index, Integer, LargeBinary, String, Table, Text, Uuid

from .table import SEQ_TYPE, metadata


class Resolution:
    """Values of ``eventseam_dlq_resolved.action``."""

    REPLAYED: Final = "replayed"
    DISCARDED: Final = "discarded"


dead_letter = Table(
    "eventseam_dead_letter",
    metadata,
    Column("seq", SEQ_TYPE, primary_key=True, autoincrement=True, comment="insertion order"),
    Column("id", Uuid(as_uuid=True), nullable=False, unique=True, comment="DeadLetter.id"),
    Column("handler", String(200), nullable=False, comment="durable handler name"),
    Column("event_id", Uuid(as_uuid=True), nullable=False),
    Column("event_type", String(200), nullable=False, comment="wire name of the event"),
    Column("context", String(100), nullable=False, comment="context that published the event"),
    Column("aggregateid", String(255), nullable=False),
    Column("payload", LargeBinary, nullable=False, comment="JSON of the event's own data"),
    Column("headers", LargeBinary, nullable=False, comment="CloudEvents headers (codec)"),
    Column("reason", String(10), nullable=False, comment="failed | shutdown"),
    Column("attempts", Integer, nullable=False),
    Column("error_type", String(300), nullable=False),
    Column("error_message", Text, nullable=False),
    Column("traceback", Text, nullable=False),
    Column("failed_at", DateTime(timezone=True), nullable=False),
)

Index("ix_eventseam_dead_letter_handler", dead_letter.c.handler, dead_letter.c.seq)

dlq_resolved = Table(
    "eventseam_dlq_resolved",
    metadata,
    Column("topic", String(249), primary_key=True, comment="dead-letter topic"),
    Column("partition_no", Integer, primary_key=True, autoincrement=False),
    Column("record_offset", SEQ_TYPE, primary_key=True, autoincrement=False),
    Column("handler", String(200), nullable=True, comment="dlq_handler of the record"),
    Column("event_id", Uuid(as_uuid=True), nullable=True, comment="ce_id of the record"),
    Column("action", String(10), nullable=False, comment="replayed | discarded"),
    Column("resolved_at", DateTime(timezone=True), nullable=False),
)

dlq_sent = Table(
    "eventseam_dlq_sent",
    metadata,
    Column("handler", String(200), primary_key=True, comment="durable handler name"),
    Column("topic", String(249), primary_key=True, comment="topic the record was read from"),
    Column("partition_no", Integer, primary_key=True, autoincrement=False),
    Column("record_offset", SEQ_TYPE, primary_key=True, autoincrement=False),
    Column("event_id", String(100), nullable=True, comment="ce_id header of the record"),
    Column("dead_letter_topic", String(249), nullable=False),
    Column("state", String(10), nullable=False, comment="sending | sent"),
    Column("marked_at", DateTime(timezone=True), nullable=False),
)

Index("ix_eventseam_dlq_sent_marked_at", dlq_sent.c.marked_at)
