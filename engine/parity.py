"""Parity: did the Kafka path deliver what the local path delivered? Per handler, for one context.

    report = await context_parity(seam, "orders")        # eventseam parity --context orders
    report.ok                                            # nothing missing on either path

Run it while a context is in ``dual`` mode, before flipping it to ``broker``, and before and after
detaching a context. For every handler subscribed to the context's events (in this process or
detached) it reports how many events each path delivered, the event ids missing on either side
and the consumer group's lag.

Data sources, read in this order so that a later read never contradicts an earlier one while
traffic flows (a row published when the outbox is read is on the topic when the topic is read;
an offset committed when offsets are read has its inbox row committed when the inbox is read):

1. the outbox: the context's rows still kept, with the mode each was written in (``local``,
   ``dual``, ``broker``) and their status (``pending``, ``parked``, ``published``, ``local``);
2. each handler's consumer group: its committed offsets (the runner commits after handling);
3. the context's topics, read from the beginning to the high-water mark by a consumer outside
   any group, and each handler's dead-letter topic (the ``ce_id`` header names the event);
4. the inbox: ``(handler, event_id)`` rows.

No receipt is written on the hot path: the inbox already says, per handler, that an event was
applied (by either path: both claim the same row in the handler's transaction), and Kafka itself
says what the broker path delivered (a record below the group's committed offset that is not on
the dead-letter topic). The price: which path applied a ``dual`` event first is not recorded, and
the local path's own failures live in the monolith's in-memory dead-letter store
(``EventSeam.bus.dead_letters``), so "delivered locally" means "applied" here. Relayed rows are
deleted at once unless ``relay.retention_seconds`` keeps them; events whose row is gone are known
from the topic only (their mode is unknown, so no local delivery is expected for them).
Reading a topic is O(its size): fine for the topics of a migration window.

Per handler:

* local path: events written in ``local`` or ``dual`` mode; missing = not applied (no inbox
  row). A handler of a detached context has no local path: a ``local`` event never reaches it
  (reason ``local-mode``), a ``dual`` one is expected from Kafka only.
* Kafka path: events written in ``dual`` or ``broker`` mode, and every event on the topic; missing
  = not delivered by the handler's group, with the reason: ``not-relayed`` (row still pending),
  ``parked`` (the relay gave up on the row), ``lag`` (on the topic, past the committed offset),
  ``dead-lettered`` (on the handler's dead-letter topic), ``not-on-topic`` (the row says
  published but the topic does not hold it: lost, or the topic was recreated).
* lag: records past the committed offset on the context's topics (all types, as the group sees).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

import anyio.to_thread
from sqlalchemy import select

from outbox.table import Status, outbox
from outbox.topics import TopicNamer

from . import inbox
from .broker_view import BrokerView, Partition, TopicContents, TopicRecord
from .dead_letter_topic import DeadLetterTopics
from .errors import SettingsError
from .modes import Mode

if TYPE_CHECKING:
    import uuid
    from collections.abc import Iterable, Sequence

    from sqlalchemy.orm import Session, sessionmaker

    from .contexts import ContextMap, HandlerSpec
    from .registry import EventRegistry
    from .settings import EventSeamSettings


class Reason(StrEnum):
    """Why an event is missing on a path."""

    NOT_APPLIED = "not-applied"
    LOCAL_MODE = "local-mode"
    NOT_RELAYED = "not-relayed"
    PARKED = "parked"
    LAG = "lag"
    DEAD_LETTERED = "dead-lettered"
    NOT_ON_TOPIC = "not-on-topic"


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An outbox row of the context: event id, wire name, the mode it was written in, status."""

    event_id: uuid.UUID
    event_type: str
    mode: Mode
    status: str


@dataclass(frozen=True, slots=True)
class Missing:
    """An event a path did not deliver (yet), and why."""

    event_id: uuid.UUID
    reason: Reason


@dataclass(frozen=True, slots=True)
class HandlerParity:
    """What each path delivered to one handler, for the context's events."""

    handler: str
    group: str
    detached: bool
    event_types: tuple[str, ...]
    local_expected: int
    local_delivered: int
    kafka_expected: int
    kafka_delivered: int
    applied: int
    lag: int
    missing_locally: tuple[Missing, ...]
    missing_on_kafka: tuple[Missing, ...]

    @property
    def ok(self) -> bool:
        """True when neither path misses an event (lag included)."""
        return not self.missing_locally and not self.missing_on_kafka

    def reasons(self) -> Counter[Reason]:
        """How many events are missing, by reason (both paths)."""
        return Counter(m.reason for m in (*self.missing_locally, *self.missing_on_kafka))


@dataclass(frozen=True, slots=True)
class ContextParity:
    """Parity of every handler subscribed to ``context``'s events."""

    context: str
    mode: Mode
    topics: tuple[str, ...]
    outbox: Counter[str]  # "mode/status" -> rows still kept
    handlers: list[HandlerParity] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every handler is in parity."""
        return all(handler.ok for handler in self.handlers)


class KafkaView(Protocol):
    """Read-only access to the broker (``BrokerView``, or a fake in tests)."""

    async def read(self, topic: str) -> TopicContents:
        """Every record of ``topic`` from the beginning to the high-water mark (empty if absent)."""
        ...

    async def committed(self, group: str, topics: Sequence[str]) -> dict[Partition, int]:
        """Offsets ``group`` committed (the next record to read) on ``topics``' partitions that have one."""
        ...


class ParityHost(Protocol):
    """What parity needs from the application (EventSeam implements it)."""

    settings: EventSeamSettings
    contexts: ContextMap
    registry: EventRegistry
    session_factory: sessionmaker[Session] | None

    def mode_of(self, context: str) -> Mode: ...


@dataclass(frozen=True, slots=True)
class Subscriber:
    """A handler subscribed to the context's events: spec, group id and the wire names it takes."""

    spec: HandlerSpec
    group: str
    event_types: frozenset[str]
    detached: bool


def subscribers(host: ParityHost, context: str) -> list[Subscriber]:
    """Every handler (of any context, detached or not) subscribed to an event ``context`` owns."""
    owned = host.contexts[context].owns  # UnknownContextError for an unknown context
    prefix = host.settings.consumer.group_prefix
    found = []
    for spec in host.contexts.handlers():
        names = frozenset(t.event_name for t in owned if issubclass(t, spec.event_types))
        if names:
            detached = spec.context in host.settings.detached
            found.append(Subscriber(spec, f"{prefix}{spec.name}", names, detached))
    return found


async def context_parity(
    host: ParityHost, context: str, view: KafkaView | None = None
) -> ContextParity:
    """Compare the paths for every handler of ``context``'s events (see the module docstring).

    ``view`` defaults to a BrokerView on ``settings.kafka`` (closed afterwards). Raises
    UnknownContextError, SettingsError without a database or Kafka, ConsumeError when a topic
    cannot be read to its end.
    """
    if host.session_factory is None:
        raise SettingsError("parity reads the outbox and the inbox: EventSeam(session_factory=...)")
    chosen = subscribers(host, context)
    namer = TopicNamer(host.settings.relay)
    topics = sorted({namer(context, t.event_name) for t in host.contexts[context].owns})
    if view is None:
        async with BrokerView(host.settings.kafka) as broker:
            return await _gather(host, context, chosen, topics, broker)
    return await _gather(host, context, chosen, topics, view)


async def _gather(
    host: ParityHost,
    context: str,
    chosen: list[Subscriber],
    topics: list[str],
    view: KafkaView,
) -> ContextParity:
    sessions = host.session_factory
    assert sessions is not None
    names = {name for subscriber in chosen for name in subscriber.event_types}
    rows = await anyio.to_thread.run_sync(read_outbox, sessions, context, names)
    contents: dict[str, TopicContents] = {}
    committed: dict[str, dict[Partition, int]] = {}
    for subscriber in chosen:  # offsets before the topics: committed records are on the topic
        committed[subscriber.group] = await view.committed(subscriber.group, topics)
    for topic in topics:
        contents[topic] = await view.read(topic)
    dlq = DeadLetterTopics(
        host.settings.consumer.dlq_topic_template, host.settings.relay.topic_prefix
    )
    report = ContextParity(
        context,
        host.mode_of(context),
        tuple(topics),
        Counter(f"{row.mode.value}/{row.status}" for row in rows),
    )
    for subscriber in chosen:
        dead: set[uuid.UUID] = set()
        for topic in topics:
            letters = await view.read(dlq(subscriber.spec.name, subscriber.spec.context, topic))
            dead.update(record.event_id for record in letters.records)
        on_topic = [
            r
            for c in contents.values()
            for r in c.records
            if r.event_type in subscriber.event_types
        ]
        highwater = {p: o for c in contents.values() for p, o in c.highwater.items()}
        ids = {row.event_id for row in rows if row.event_type in subscriber.event_types}
        ids.update(record.event_id for record in on_topic)
        applied = await anyio.to_thread.run_sync(read_applied, sessions, subscriber.spec.name, ids)
        report.handlers.append(
            compare(
                subscriber,
                [row for row in rows if row.event_type in subscriber.event_types],
                on_topic,
                highwater,
                committed[subscriber.group],
                dead,
                applied,
            )
        )
    return report


def compare(
    subscriber: Subscriber,
    rows: Sequence[OutboxEntry],
    on_topic: Sequence[TopicRecord],
    highwater: dict[Partition, int],
    committed: dict[Partition, int],
    dead_lettered: set[uuid.UUID],
    applied: set[uuid.UUID],
) -> HandlerParity:
    """The parity of one handler from what was read (pure: no I/O)."""
    delivered = {
        r.event_id
        for r in on_topic
        if r.offset < committed.get((r.topic, r.partition), 0) and r.event_id not in dead_lettered
    }
    topic_ids = {r.event_id for r in on_topic}
    local_ids = {r.event_id for r in rows if r.mode is not Mode.BROKER}
    kafka_reason: dict[uuid.UUID, Reason] = {}
    for row in rows:
        if row.mode.relays:
            kafka_reason[row.event_id] = _row_reason(row, topic_ids)
        elif subscriber.detached:
            kafka_reason[row.event_id] = Reason.LOCAL_MODE
    for record in on_topic:
        kafka_reason[record.event_id] = Reason.LAG
    for event_id in dead_lettered & kafka_reason.keys():
        kafka_reason[event_id] = Reason.DEAD_LETTERED
    missing_on_kafka = tuple(
        Missing(event_id, reason)
        for event_id, reason in sorted(kafka_reason.items())
        if event_id not in delivered
    )
    missing_locally: tuple[Missing, ...] = ()
    if not subscriber.detached:
        missing_locally = tuple(
            Missing(event_id, Reason.NOT_APPLIED) for event_id in sorted(local_ids - applied)
        )
    lag = sum(max(0, end - committed.get(partition, 0)) for partition, end in highwater.items())
    return HandlerParity(
        handler=subscriber.spec.name,
        group=subscriber.group,
        detached=subscriber.detached,
        event_types=tuple(sorted(subscriber.event_types)),
        local_expected=0 if subscriber.detached else len(local_ids),
        local_delivered=0 if subscriber.detached else len(local_ids & applied),
        kafka_expected=len(kafka_reason),
        kafka_delivered=len(delivered & kafka_reason.keys()),
        applied=len(applied & (local_ids | kafka_reason.keys())),
        lag=lag,
        missing_locally=missing_locally,
        missing_on_kafka=missing_on_kafka,
    )


def _row_reason(row: OutboxEntry, topic_ids: set[uuid.UUID]) -> Reason:
    """Why a relayed-mode row would be missing on Kafka, from its status."""
    if row.status == Status.PENDING:
        return Reason.NOT_RELAYED
    if row.status == Status.PARKED:
        return Reason.PARKED
    return Reason.LAG if row.event_id in topic_ids else Reason.NOT_ON_TOPIC


def read_outbox(
    sessions: sessionmaker[Session], context: str, event_types: Iterable[str]
) -> list[OutboxEntry]:
    """The context's outbox rows of ``event_types`` still kept, in write order (blocking)."""
    query = (
        select(outbox.c.id, outbox.c.type, outbox.c.mode, outbox.c.status)
        .where(outbox.c.aggregatetype == context, outbox.c.type.in_(sorted(event_types)))
        .order_by(outbox.c.seq)
    )
    with sessions() as session:
        return [
            OutboxEntry(row.id, row.type, Mode(row.mode), row.status)
            for row in session.execute(query)
        ]


def read_applied(
    sessions: sessionmaker[Session], handler: str, event_ids: set[uuid.UUID]
) -> set[uuid.UUID]:
    """The ids among ``event_ids`` that ``handler`` applied (inbox rows; blocking)."""
    with sessions() as session:
        return event_ids - inbox.filter_new(session, handler, event_ids)
