"""What moved where: the demo's read side for each step (outbox rows, inbox rows, consumer counters).

    before = counts(seam)
    ...                                             # a step places orders and settles
    rows = moves(seam, before, counts(seam))        # per handler: applied from the bus / Kafka

The inbox says which handler applied an event (by either path); the monolith's consumer runner
counts what it applied and skipped from Kafka, so what the bus applied is the difference. A
detached handler's events are applied by its worker process, from Kafka.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from outbox.inbox_table import inbox
from outbox.table import outbox

if TYPE_CHECKING:
    import uuid

    from engine.seam import EventSeam


@dataclass(frozen=True, slots=True)
class MovedEvent:
    """An event as the outbox recorded it, with the mode its context was in."""

    seq: int
    event_id: uuid.UUID
    event_type: str
    context: str
    mode: str
    order_id: str


@dataclass(frozen=True, slots=True)
class HandlerMoves:
    """One handler in one step: where it runs and the events it applied from each path."""

    handler: str
    runs_in: str
    bus: int
    kafka: int
    skipped: int


@dataclass(frozen=True, slots=True)
class Counts:
    """Inbox rows per handler and the in-process consumers' counters, at one moment."""

    inbox: Counter[str]
    kafka_applied: Counter[str]
    kafka_skipped: Counter[str]
    runner: object


def counts(seam: EventSeam) -> Counts:
    """The counters now (the runner's are those of ``seam``'s consumer runner, if it runs)."""
    with seam.transaction() as unit:
        rows = unit.session.execute(select(inbox.c.handler, func.count()).group_by(inbox.c.handler))
        per_handler = Counter({str(handler): int(count) for handler, count in rows})
    runner = seam.consumer_runner
    stats = runner.stats() if runner is not None else {}
    return Counts(
        per_handler,
        Counter({name: s.applied for name, s in stats.items()}),
        Counter({name: s.skipped for name, s in stats.items()}),
        runner,
    )


def moves(seam: EventSeam, before: Counts, after: Counts) -> list[HandlerMoves]:
    """Per handler, what it applied between ``before`` and ``after``, and from which path."""
    if before.runner is not after.runner:  # the monolith restarted: its counters start at 0
        before = Counts(before.inbox, Counter(), Counter(), after.runner)
    detached = detached_handlers(seam)
    found = []
    for spec in seam.contexts.handlers():
        name = spec.name
        applied = after.inbox[name] - before.inbox[name]
        if name in detached:
            found.append(HandlerMoves(name, "shipping worker", 0, applied, 0))
            continue
        kafka = after.kafka_applied[name] - before.kafka_applied[name]
        skipped = after.kafka_skipped[name] - before.kafka_skipped[name]
        found.append(HandlerMoves(name, "monolith", applied - kafka, kafka, skipped))
    return found


def detached_handlers(seam: EventSeam) -> set[str]:
    """Durable names of the handlers that do not run in ``seam``'s process."""
    return {spec.name for spec in seam.contexts.handlers(seam.settings.detached)}


def read_moved(seam: EventSeam, after_seq: int = 0) -> list[MovedEvent]:
    """Outbox rows written after ``after_seq``, in write order, with their mode."""
    query = (
        select(
            outbox.c.seq,
            outbox.c.id,
            outbox.c.type,
            outbox.c.aggregatetype,
            outbox.c.mode,
            outbox.c.payload,
        )
        .where(outbox.c.seq > after_seq)
        .order_by(outbox.c.seq)
    )
    with seam.transaction() as uow:
        rows = uow.session.execute(query).all()
    return [
        MovedEvent(
            row.seq,
            row.id,
            row.type,
            row.aggregatetype,
            row.mode,
            str(json.loads(row.payload).get("order_id", "?")),
        )
        for row in rows
    ]


def read_applied(seam: EventSeam, event_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
    """The handlers that applied each event (the inbox), by event id."""
    applied: dict[uuid.UUID, list[str]] = {}
    with seam.transaction() as uow:
        query = select(inbox.c.event_id, inbox.c.handler).where(inbox.c.event_id.in_(event_ids))
        for event_id, handler in uow.session.execute(query):
            applied.setdefault(event_id, []).append(handler)
    return applied
