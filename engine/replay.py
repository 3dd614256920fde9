"""Replay: re-deliver retained events to a context's handlers; the inbox keeps it safe.

    found = await retained_events(seam, "shipping", since)        # what can be replayed
    summary = await replay(seam, found, dry_run=False, progress=bar.advance)

Where retained events come from (every event type a handler of the context subscribes to,
whichever context publishes it, with ``occurred_at >= since``):

* the outbox: rows ``published`` (kept ``RelaySettings.retention_seconds``) and ``local`` (kept
  for the same window), in write order. ``pending`` rows are on their way (the relay and the
  bus deliver them), ``parked`` ones are ``eventseam outbox parked``'s business.
* Kafka, when bootstrap servers are set: the topics of the contexts publishing those types
  (outbox.topics naming), read from the log start to the high watermark (engine.topic_records);
  records of other types are passed over. The topic's own retention bounds what is there.

An event found in both is replayed once. Events are replayed in ``occurred_at`` order (then event
id, a UUIDv7), so one aggregate's events reach a handler in the order they happened. Records
that no longer decode are reported in ``unreadable``, never applied.

For every event and every handler of the context that subscribes to its type (``handler``
restricts it to one), engine.redelivery applies it with the inbox: ``delivered`` (applied now),
``already applied`` (the inbox holds it: skipped, never applied twice) or ``failed`` (the handler
raised; its transaction rolled back). After a failure, the handler's later events of the same
aggregate are not applied (failed too, "skipped"), so its order holds. ``dry_run`` applies
nothing: ``delivered`` counts what would be. A second replay of the same window applies nothing.
"""

from __future__ import annotations

from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio.to_thread
from sqlalchemy import Engine, select

from outbox.table import Status, outbox
from outbox.topics import TopicNamer

from .codec import decode, decode_headers
from .errors import ContextError, DecodeError, SettingsError
from .redelivery import Delivery, Outcome, Redeliverer, find_handler

if TYPE_CHECKING:
    import uuid
    from collections.abc import Callable, Sequence

    from .contexts import HandlerSpec
    from .events import DomainEvent
    from .redelivery import RedeliveryHost
    from .topic_records import KafkaRecord

#: Outbox statuses whose rows are replayed.
RETAINED = (Status.PUBLISHED, Status.LOCAL)


@dataclass
class Retained:
    """What ``retained_events`` found: events to replay, per-source counts, unreadable records."""

    context: str
    since: datetime
    handlers: list[HandlerSpec]
    events: list[DomainEvent] = field(default_factory=list)
    sources: Counter[str] = field(default_factory=Counter)
    unreadable: list[str] = field(default_factory=list)

    @property
    def deliveries(self) -> int:
        """How many (event, handler) pairs the replay goes through."""
        return sum(1 for event in self.events for spec in self.handlers if _accepts(spec, event))


@dataclass
class HandlerCounts:
    """One handler's replay: events delivered, already applied, failed."""

    delivered: int = 0
    already_applied: int = 0
    failed: int = 0

    def add(self, outcome: Outcome) -> None:
        """Count one delivery's outcome."""
        if outcome is Outcome.DELIVERED:
            self.delivered += 1
        elif outcome is Outcome.ALREADY_APPLIED:
            self.already_applied += 1
        else:
            self.failed += 1


@dataclass
class ReplaySummary:
    """Counts per handler (in declaration order), the failures, and whether it was a dry run."""

    dry_run: bool
    handlers: dict[str, HandlerCounts]
    failures: list[Delivery] = field(default_factory=list)

    @property
    def total(self) -> HandlerCounts:
        """The counts of every handler added up."""
        total = HandlerCounts()
        for counts in self.handlers.values():
            total.delivered += counts.delivered
            total.already_applied += counts.already_applied
            total.failed += counts.failed
        return total


def _accepts(spec: HandlerSpec, event: DomainEvent) -> bool:
    return isinstance(event, spec.event_types)


def handlers_of(host: RedeliveryHost, context: str, handler: str | None) -> list[HandlerSpec]:
    """The context's handlers (only ``handler`` when given).

    UnknownContextError for an unknown context, ContextError for one without handlers,
    UnknownHandlerError for a handler that is not the context's.
    """
    specs = host.contexts.handlers([context])
    if not specs:
        raise ContextError(f"context {context!r} declares no handlers: nothing to replay to")
    if handler is None:
        return specs
    spec = find_handler(host, handler)
    if spec.context != context:
        raise ContextError(
            f"handler {handler!r} belongs to context {spec.context!r}, not {context!r}"
        )
    return [spec]


async def retained_events(
    host: RedeliveryHost,
    context: str,
    since: datetime,
    *,
    handler: str | None = None,
    kafka: bool = True,
    engine: Engine | None = None,
) -> Retained:
    """Events of the types ``context``'s handlers subscribe to, retained since ``since``.

    ``kafka=False`` reads the outbox only; ``engine`` replaces the application's (tests). See
    the module docstring. Raises ConsumeError when Kafka cannot be read.
    """
    specs = handlers_of(host, context, handler)
    since = since.astimezone(UTC)
    wanted = {
        event_type.event_name
        for event_type in host.contexts.event_types()
        if any(issubclass(event_type, spec.event_types) for spec in specs)
    }
    found = Retained(context, since, specs)
    seen: set[uuid.UUID] = set()
    engine = engine or _engine_of(host)
    for event in await anyio.to_thread.run_sync(_from_outbox, host, engine, wanted, since, found):
        if event.event_id not in seen:
            seen.add(event.event_id)
            found.events.append(event)
            found.sources["outbox"] += 1
    if kafka and host.settings.kafka.bootstrap_servers:
        for event in await _from_kafka(host, wanted, since, found):
            if event.event_id not in seen:
                seen.add(event.event_id)
                found.events.append(event)
                found.sources["kafka"] += 1
    found.events.sort(key=lambda event: (event.occurred_at, event.event_id))
    return found


def _engine_of(host: RedeliveryHost) -> Engine:
    bind = host.session_factory.kw.get("bind") if host.session_factory is not None else None
    if not isinstance(bind, Engine):
        raise SettingsError(
            "replay needs the application's database (a session factory bound to an Engine)"
        )
    return bind


def _from_outbox(
    host: RedeliveryHost, engine: Engine, wanted: set[str], since: datetime, found: Retained
) -> list[DomainEvent]:
    query = (
        select(outbox.c.aggregateid, outbox.c.payload, outbox.c.headers, outbox.c.seq)
        .where(
            outbox.c.status.in_(RETAINED),
            outbox.c.type.in_(sorted(wanted)),
            outbox.c.occurred_at >= since,
        )
        .order_by(outbox.c.seq)
    )
    events = []
    with engine.connect() as connection:
        for row in connection.execute(query):
            headers = decode_headers(bytes(row.headers))
            try:
                events.append(decode(host.registry, row.aggregateid.encode(), row.payload, headers))
            except DecodeError as exc:
                found.unreadable.append(f"outbox row {row.seq}: {exc}")
    return events


async def _from_kafka(
    host: RedeliveryHost, wanted: set[str], since: datetime, found: Retained
) -> list[DomainEvent]:
    from .topic_records import TopicReader

    namer = TopicNamer(host.settings.relay)
    topics = sorted(
        {
            namer(owner, event_type.event_name)
            for event_type in host.contexts.event_types()
            if event_type.event_name in wanted
            and (owner := host.contexts.owner_of(event_type)) is not None
        }
    )
    events = []
    async with TopicReader(host.settings.kafka, purpose="replay") as reader:
        for topic in topics:
            for record in await reader.read(topic):
                event = _decode_record(host, record, wanted, found)
                if event is not None and event.occurred_at >= since:
                    events.append(event)
    return events


def _decode_record(
    host: RedeliveryHost, record: KafkaRecord, wanted: set[str], found: Retained
) -> DomainEvent | None:
    kind = dict(record.headers).get("ce_type", b"").decode(errors="replace")
    if kind not in wanted:
        return None
    try:
        return decode(host.registry, record.key, record.value, record.headers)
    except DecodeError as exc:
        where = f"{record.topic}:{record.partition}:{record.offset}"
        found.unreadable.append(f"kafka record {where}: {exc}")
        return None


async def replay(
    host: RedeliveryHost,
    found: Retained,
    *,
    dry_run: bool = False,
    progress: Callable[[int], object] | None = None,
) -> ReplaySummary:
    """Re-deliver ``found`` to its handlers (see the module docstring); ``progress(n)`` after
    every ``n`` deliveries gone through."""
    summary = ReplaySummary(dry_run, {spec.name: HandlerCounts() for spec in found.handlers})
    again = Redeliverer(host)
    async with nullcontext(again) if dry_run else again:  # a dry run starts no bus
        for spec in found.handlers:
            mine = [event for event in found.events if _accepts(spec, event)]
            new = await again.pending(spec.name, [event.event_id for event in mine])
            await _replay_to(again, spec, mine, new, summary, progress)
    return summary


async def _replay_to(
    again: Redeliverer,
    spec: HandlerSpec,
    events: Sequence[DomainEvent],
    new: set[uuid.UUID],
    summary: ReplaySummary,
    progress: Callable[[int], object] | None,
) -> None:
    """One handler's events, in order; after a failure its aggregate's later events wait."""
    counts = summary.handlers[spec.name]
    failed_aggregates: set[str] = set()
    for event in events:
        if event.event_id not in new:
            delivery = Delivery(
                spec.name,
                event.event_id,
                event.event_name,
                event.aggregate_id,
                Outcome.ALREADY_APPLIED,
            )
        elif summary.dry_run:
            delivery = Delivery(
                spec.name, event.event_id, event.event_name, event.aggregate_id, Outcome.DELIVERED
            )
        elif event.aggregate_id in failed_aggregates:
            delivery = Delivery(
                spec.name,
                event.event_id,
                event.event_name,
                event.aggregate_id,
                Outcome.FAILED,
                f"skipped: an earlier event of aggregate {event.aggregate_id!r} failed",
            )
        else:
            delivery = await again.apply(spec.name, event)
        counts.add(delivery.outcome)
        if delivery.outcome is Outcome.FAILED:
            failed_aggregates.add(event.aggregate_id)
            summary.failures.append(delivery)
        if progress is not None:
            progress(1)
