"""Dead letters of both kinds as an operator sees them: list, show, replay, discard.

    letters = DeadLetters(seam)                   # the application's EventSeam
    for letter in await letters.list():          # bus letters, then Kafka ones
        ...
    delivery = await letters.replay(letter.id)   # Outcome.DELIVERED: resolved
    await letters.discard(other.id)

Two kinds, one id syntax:

* ``bus``: dead letters of the in-memory bus, persisted by engine.dead_letter_db when the seam has
  a database. Id: the letter's UUID. Replayed or discarded, the row is deleted.
* ``kafka``: records of the consumer runner's dead-letter topics (engine.dead_letter_topic), one
  topic per handler by default; every handler's topics are read. Id:
  ``TOPIC:PARTITION:OFFSET``. Kafka cannot delete one record: a replayed or discarded record is
  marked in ``eventseam_dlq_resolved`` and no longer listed. Copies of one dead letter (the same
  ``dlq_handler`` and ``dlq_original_topic/partition/offset``, as versions before the runner's
  dead-letter marks could write when a worker was killed) are listed once, under the first
  copy's id; replaying or discarding it resolves every copy.

Replay applies the event to the handler named by the letter, in this process, with the inbox
(engine.redelivery): ``delivered`` or ``already applied`` resolve the letter; ``failed`` keeps it
(the new error is reported). A Kafka letter whose record no longer decodes (its DecodeError
reason is ``dlq_reason``) cannot be replayed: fix the producer, then discard it.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import anyio.to_thread
from sqlalchemy import Engine

from outbox.dead_letter_table import Resolution
from outbox.topics import TopicNamer

from . import dead_letter_db as stored_letters
from .codec import decode
from .dead_letter_topic import DeadLetterTopics, original_headers, read_dead_letter
from .errors import DecodeError, SettingsError, UnknownDeadLetterError
from .redelivery import Delivery, Outcome, Redeliverer, find_handler

if TYPE_CHECKING:
    import builtins
    from collections.abc import Callable, Sequence

    from sqlalchemy import Connection

    from .events import DomainEvent
    from .redelivery import RedeliveryHost
    from .topic_records import KafkaRecord, TopicReader

Kind = Literal["bus", "kafka"]
Location = tuple[str, int, int]
LetterKey = tuple[str, str, int, int]
"""``(dlq_handler, dlq_original_topic, dlq_original_partition, dlq_original_offset)``."""
_KAFKA_ID = re.compile(r"^([A-Za-z0-9._-]{1,249}):(\d+):(\d+)$")


def parse_id(text: str) -> uuid.UUID | Location:
    """A bus letter's UUID, or a Kafka letter's ``(topic, partition, offset)``; ValueError else."""
    try:
        return uuid.UUID(text)
    except ValueError:
        pass
    found = _KAFKA_ID.match(text)
    if found is None:
        raise ValueError(
            f"{text!r} is not a dead-letter id: a bus letter's UUID, or TOPIC:PARTITION:OFFSET "
            "for a Kafka dead-letter record (see `eventseam dlq list`)"
        )
    return found[1], int(found[2]), int(found[3])


@dataclass(frozen=True, slots=True)
class DeadLetterView:
    """One dead letter of either kind, ready to print (``payload``: the event's JSON text)."""

    id: str
    kind: Kind
    handler: str
    event_type: str
    event_id: str | None
    aggregate_id: str | None
    reason: str
    attempts: int
    error_type: str
    error_message: str
    failed_at: datetime | None
    payload: str
    traceback: str | None = None


def _bus_view(row: stored_letters.StoredDeadLetter) -> DeadLetterView:
    return DeadLetterView(
        id=str(row.id),
        kind="bus",
        handler=row.handler,
        event_type=row.event_type,
        event_id=str(row.event_id),
        aggregate_id=row.aggregate_id,
        reason=row.reason,
        attempts=row.attempts,
        error_type=row.error_type,
        error_message=row.error_message,
        failed_at=row.failed_at,
        payload=row.payload.decode(errors="replace"),
        traceback=row.traceback,
    )


def _kafka_view(record: KafkaRecord) -> DeadLetterView:
    """The view of a dead-letter record; UnknownDeadLetterError when it carries no dlq headers."""
    try:
        info = read_dead_letter(record.headers)
    except (KeyError, ValueError):
        raise UnknownDeadLetterError(_id_of(record.location)) from None
    headers = dict(record.headers)
    return DeadLetterView(
        id=_id_of(record.location),
        kind="kafka",
        handler=info.handler,
        event_type=headers.get("ce_type", b"").decode(errors="replace") or "-",
        event_id=headers.get("ce_id", b"").decode(errors="replace") or None,
        aggregate_id=record.key.decode(errors="replace") if record.key else None,
        reason=info.reason,
        attempts=info.attempts,
        error_type=info.exception_type,
        error_message=info.exception_message,
        failed_at=info.failed_at,
        payload=(record.value or b"").decode(errors="replace"),
    )


def _id_of(location: Location) -> str:
    return "{}:{}:{}".format(*location)


def _key_of(record: KafkaRecord) -> LetterKey | None:
    """What makes copies of one dead letter the same letter; None without dlq headers."""
    try:
        info = read_dead_letter(record.headers)
    except (KeyError, ValueError):
        return None
    return info.handler, info.original_topic, info.original_partition, info.original_offset


class DeadLetters:
    """The dead letters of the application ``host`` (see the module docstring).

    ``engine`` replaces the application's database; ``kafka=False`` leaves the dead-letter topics
    out (also when no bootstrap servers are set).
    """

    def __init__(
        self, host: RedeliveryHost, *, engine: Engine | None = None, kafka: bool = True
    ) -> None:
        self._host = host
        bind = host.session_factory.kw.get("bind") if host.session_factory is not None else None
        engine = engine or (bind if isinstance(bind, Engine) else None)
        if engine is None:
            raise SettingsError(
                "dead letters are kept in the application's database: "
                "EventSeam(session_factory=sessionmaker(engine)) or --database-url"
            )
        self._engine = engine
        self.kafka = kafka and bool(host.settings.kafka.bootstrap_servers)

    def dead_letter_topics(self) -> dict[str, set[str]]:
        """Every dead-letter topic of the application's handlers -> the handlers writing it."""
        settings = self._host.settings
        namer = TopicNamer(settings.relay)
        names = DeadLetterTopics(settings.consumer.dlq_topic_template, settings.relay.topic_prefix)
        topics: dict[str, set[str]] = {}
        for spec in self._host.contexts.handlers():
            for event_type in self._host.contexts.event_types():
                owner = self._host.contexts.owner_of(event_type)
                if owner is None or not issubclass(event_type, spec.event_types):
                    continue
                topic = names(spec.name, spec.context, namer(owner, event_type.event_name))
                topics.setdefault(topic, set()).add(spec.name)
        return topics

    async def list(self, *, handler: str | None = None) -> list[DeadLetterView]:
        """Bus letters in the order they failed, then unresolved Kafka letters by topic.

        UnknownHandlerError when ``handler`` is not a handler of the application.
        """
        if handler is not None:
            find_handler(self._host, handler)
        rows = await self._db(functools.partial(stored_letters.list_stored, handler=handler))
        views = [_bus_view(row) for row in rows]
        if not self.kafka:
            return views
        records: list[KafkaRecord] = []
        async with self._reader() as reader:
            for topic, writers in sorted(self.dead_letter_topics().items()):
                if handler is None or handler in writers:
                    records.extend(await reader.read(topic))
        done = await self._db(stored_letters.resolved, [r.location for r in records])
        seen: set[LetterKey] = set()
        for record in records:
            key = _key_of(record)
            if record.location in done or key in seen:
                continue  # resolved, or a copy of a letter listed already
            if key is not None:
                seen.add(key)
            try:
                view = _kafka_view(record)
            except UnknownDeadLetterError:
                continue  # not written by the runner: no dlq headers
            if handler is None or view.handler == handler:
                views.append(view)
        return views

    async def show(self, letter_id: str) -> DeadLetterView:
        """The letter ``letter_id``; UnknownDeadLetterError when there is none (or resolved)."""
        found = parse_id(letter_id)
        if isinstance(found, uuid.UUID):
            return _bus_view(await self._db(stored_letters.get_stored, found))
        return _kafka_view(await self._record(found))

    async def discard(self, letter_id: str) -> DeadLetterView:
        """Drop the letter for good (its event is never applied by it); returns what it was."""
        found = parse_id(letter_id)
        if isinstance(found, uuid.UUID):
            row = await self._db(stored_letters.get_stored, found)
            await self._db(stored_letters.delete_stored, found, commit=True)
            return _bus_view(row)
        view = _kafka_view(await self._record(found))
        await self._resolve(found, view, Resolution.DISCARDED)
        return view

    async def replay(
        self,
        letter_ids: Sequence[str],
        *,
        progress: Callable[[Delivery], object] | None = None,
    ) -> builtins.list[Delivery]:
        """Apply each letter's event to its handler again (see the module docstring), in order.

        UnknownDeadLetterError (before anything is applied) when an id names no letter.
        """
        planned = [(letter_id, *await self._event_of(letter_id)) for letter_id in letter_ids]
        deliveries = []
        async with Redeliverer(self._host) as again:
            for letter_id, view, event in planned:
                if event is None:
                    delivery = Delivery(
                        view.handler,
                        uuid.UUID(int=0),
                        view.event_type,
                        view.aggregate_id or "",
                        Outcome.FAILED,
                        f"the record does not decode ({view.reason}): discard it",
                    )
                else:
                    again.handler(view.handler)  # UnknownHandlerError for a renamed handler
                    delivery = await again.apply(view.handler, event)
                    if delivery.outcome is not Outcome.FAILED:
                        await self._resolved(letter_id, view)
                deliveries.append(delivery)
                if progress is not None:
                    progress(delivery)
        return deliveries

    async def _event_of(self, letter_id: str) -> tuple[DeadLetterView, DomainEvent | None]:
        found = parse_id(letter_id)
        registry = self._host.registry
        if isinstance(found, uuid.UUID):
            row = await self._db(stored_letters.get_stored, found)
            try:
                return _bus_view(row), row.event(registry)
            except DecodeError:
                return _bus_view(row), None
        record = await self._record(found)
        view = _kafka_view(record)
        try:
            event = decode(registry, record.key, record.value, original_headers(record.headers))
        except DecodeError:
            return view, None
        return view, event

    async def _resolved(self, letter_id: str, view: DeadLetterView) -> None:
        found = parse_id(letter_id)
        if isinstance(found, uuid.UUID):
            await self._db(stored_letters.delete_stored, found, commit=True)
        else:
            await self._resolve(found, view, Resolution.REPLAYED)

    async def _resolve(self, location: Location, view: DeadLetterView, action: str) -> None:
        """Mark the record at ``location`` and its unresolved copies ``action``.

        The same transaction forgets the topic's marks of records Kafka no longer holds.
        """
        event_id = uuid.UUID(view.event_id) if view.event_id and _is_uuid(view.event_id) else None
        copies, log_starts = await self._copies(location)

        def mark(connection: Connection) -> None:
            for copy in sorted(copies - stored_letters.resolved(connection, copies)):
                stored_letters.mark_resolved(
                    connection, copy, action, handler=view.handler, event_id=event_id
                )
            stored_letters.forget_gone(connection, log_starts)

        await self._db(mark, commit=True)

    async def _copies(self, location: Location) -> tuple[set[Location], dict[tuple[str, int], int]]:
        """``location`` and the records of its topic that are copies of the same dead letter;
        the log start offsets of the topic's partitions."""
        async with self._reader() as reader:
            records = await reader.read(location[0])
        keys = {record.location: _key_of(record) for record in records}
        key = keys.get(location)
        if key is None:
            return {location}, reader.log_starts
        return {found for found, other in keys.items() if other == key}, reader.log_starts

    async def _record(self, location: Location) -> KafkaRecord:
        """The unresolved dead-letter record at ``location``; UnknownDeadLetterError otherwise."""
        letter_id = _id_of(location)
        if not self.kafka or location[0] not in self.dead_letter_topics():
            raise UnknownDeadLetterError(
                f"{letter_id} (not a dead-letter topic of this application"
                + ("" if self.kafka else "; Kafka is not configured")
                + ")"
            )
        if await self._db(stored_letters.resolved, [location]):
            raise UnknownDeadLetterError(f"{letter_id} (already replayed or discarded)")
        async with self._reader() as reader:
            record = await reader.read_one(*location)
        if record is None:
            raise UnknownDeadLetterError(letter_id)
        return record

    def _reader(self) -> TopicReader:
        from .topic_records import TopicReader

        return TopicReader(self._host.settings.kafka, purpose="dlq")

    async def _db(self, action: Callable[..., object], *args: object, commit: bool = False) -> Any:
        def run() -> object:
            if commit:
                with self._engine.begin() as connection:
                    return action(connection, *args)
            with self._engine.connect() as connection:
                return action(connection, *args)

        return await anyio.to_thread.run_sync(run)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def to_dict(view: DeadLetterView) -> dict[str, object]:
    """``view`` as JSON-ready data (times in RFC 3339, the payload parsed when it is JSON)."""
    try:
        payload: object = json.loads(view.payload)
    except ValueError:
        payload = view.payload
    failed_at = view.failed_at.astimezone(UTC).isoformat() if view.failed_at else None
    return {
        "id": view.id,
        "kind": view.kind,
        "handler": view.handler,
        "event_type": view.event_type,
        "event_id": view.event_id,
        "aggregate_id": view.aggregate_id,
        "reason": view.reason,
        "attempts": view.attempts,
        "error_type": view.error_type,
        "error_message": view.error_message,
        "failed_at": failed_at,
        "payload": payload,
        "traceback": view.traceback,
    }
