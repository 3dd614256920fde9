"""The inbox: which handler already applied which event, for exactly-once effects.

One row per ``(handler, event_id)`` (the primary key), written in the handler's own transaction
(engine.inbox), so an event is applied once per handler whatever path delivered it (in-memory
bus or Kafka) and however often it was delivered. ``processed_at`` drives retention.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, String, Table, Uuid, func

from .table import metadata

inbox = Table(
    "eventseam_inbox",
    metadata,
    Column(
        "handler", String(200), primary_key=True, comment="durable handler name (<context>.<name>)"
    ),
    Column("event_id", Uuid(as_uuid=True), primary_key=True, comment="the event's idempotency key"),
    Column(
        "event_type", String(200), nullable=True, comment="wire name of the event (diagnostics)"
    ),
    Column(
        "context",
        String(100),
        nullable=True,
        comment="context that published the event (diagnostics)",
    ),
    Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

Index("ix_eventseam_inbox_processed_at", inbox.c.processed_at)
