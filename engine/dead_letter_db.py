"""Dead letters in the database: the bus's letters (a DeadLetterStore) and resolved Kafka letters.

EventSeam uses SqlDeadLetterStore whenever its session factory is bound to an Engine, so the
bus's dead letters outlive the process and ``eventseam dlq`` (another process) can list, replay
and discard them. Contract of the store (see engine.dead_letters.DeadLetterStore):

* ``add`` runs one INSERT in a transaction of its own on the calling thread (the bus's loop):
  dead letters are the failure path, never the hot path. The event is stored as the outbox
  stores it, its personal-data fields sealed with the seam's keys (never in clear). When the
  database refuses (down, table missing: run ``eventseam db upgrade``), the letter is kept in
  memory instead and the failure is logged as ``dead_letters.persist_failed``: nothing is
  dropped silently.
* ``list``, ``get``, ``count`` read the database (and the letters kept in memory), so a letter
  replayed or discarded by another process disappears here too. Letters come back decoded with
  the seam's registry (older versions upcast, personal-data fields opened); a row that no
  longer decodes is left out of ``list`` (logged) and ``get`` raises DecodeError for it.
* ``remove`` deletes the row (``Bus.redeliver`` calls it); UnknownDeadLetterError when absent.

The module-level functions serve the CLI: raw rows (no decoding needed to show them) and the
``eventseam_dlq_resolved`` marks of Kafka dead-letter records. A mark is needed while its record
is on the topic; ``forget_gone`` deletes the marks of records below their partition's log start
(Kafka's retention deleted them), so the table stays as small as the topics' unresolved past.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import bindparam, delete, func, insert, select
from sqlalchemy.exc import SQLAlchemyError

from outbox.dead_letter_table import dead_letter, dlq_resolved

from .codec import decode, decode_headers, encode, encode_headers
from .dead_letters import DeadLetter, InMemoryDeadLetterStore
from .errors import DecodeError, EngineError, UnknownDeadLetterError, error_line

if TYPE_CHECKING:
    import builtins
    import uuid
    from collections.abc import Iterable, Mapping

    from sqlalchemy import Connection, Engine, Row

    from .codec import EncodedEvent
    from .crypto_keys import SubjectKeys
    from .events import DomainEvent
    from .registry import EventRegistry

_log = structlog.get_logger(__name__)

Location = tuple[str, int, int]
"""A Kafka record as ``(topic, partition, offset)``."""


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    """A row of ``eventseam_dead_letter`` as stored (the event still encoded)."""

    id: uuid.UUID
    handler: str
    event_id: uuid.UUID
    event_type: str
    context: str
    aggregate_id: str
    payload: bytes
    headers: list[tuple[str, bytes]]
    reason: str
    attempts: int
    error_type: str
    error_message: str
    traceback: str
    failed_at: datetime

    def event(self, registry: EventRegistry) -> DomainEvent:
        """The event, decoded (and upcast) with ``registry``; DecodeError when it cannot be."""
        return decode(registry, self.aggregate_id.encode(), self.payload, self.headers)


#: Stored whatever its size: the event was published (and size-checked) already.
_NO_LIMIT = 2**62


def _encoded(letter: DeadLetter, keys: SubjectKeys | None, connection: Connection) -> EncodedEvent:
    """The letter's event encoded, its personal-data fields sealed (never stored in clear)."""
    if keys is not None and type(letter.event).personal_fields:
        from .crypto_events import encode_sealed

        return encode_sealed(keys, connection, letter.event, max_bytes=_NO_LIMIT)
    return encode(letter.event, max_bytes=_NO_LIMIT)


def _row_values(record: EncodedEvent, letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "handler": letter.handler,
        "event_id": letter.event.event_id,
        "event_type": letter.event.event_name,
        "context": letter.event.source or "",
        "aggregateid": letter.event.aggregate_id,
        "payload": record.value,
        "headers": encode_headers(record.headers),
        "reason": letter.reason,
        "attempts": letter.attempts,
        "error_type": letter.error_type[:300],
        "error_message": letter.error_message,
        "traceback": letter.traceback,
        "failed_at": letter.failed_at,
    }


def _stored(row: Row[Any]) -> StoredDeadLetter:
    failed_at = row.failed_at
    if failed_at.tzinfo is None:  # SQLite keeps UTC without a zone
        failed_at = failed_at.replace(tzinfo=UTC)
    return StoredDeadLetter(
        id=row.id,
        handler=row.handler,
        event_id=row.event_id,
        event_type=row.event_type,
        context=row.context,
        aggregate_id=row.aggregateid,
        payload=bytes(row.payload),
        headers=decode_headers(bytes(row.headers)),
        reason=row.reason,
        attempts=row.attempts,
        error_type=row.error_type,
        error_message=row.error_message,
        traceback=row.traceback,
        failed_at=failed_at,
    )


def list_stored(connection: Connection, *, handler: str | None = None) -> list[StoredDeadLetter]:
    """Stored bus dead letters in insertion order, optionally only ``handler``'s."""
    query = select(dead_letter).order_by(dead_letter.c.seq)
    if handler is not None:
        query = query.where(dead_letter.c.handler == handler)
    return [_stored(row) for row in connection.execute(query)]


def get_stored(connection: Connection, letter_id: uuid.UUID) -> StoredDeadLetter:
    """The stored letter ``letter_id``; UnknownDeadLetterError when absent."""
    row = connection.execute(select(dead_letter).where(dead_letter.c.id == letter_id)).first()
    if row is None:
        raise UnknownDeadLetterError(letter_id)
    return _stored(row)


def delete_stored(connection: Connection, letter_id: uuid.UUID) -> None:
    """Delete the stored letter ``letter_id``; UnknownDeadLetterError when absent."""
    result = connection.execute(delete(dead_letter).where(dead_letter.c.id == letter_id))
    if result.rowcount != 1:
        raise UnknownDeadLetterError(letter_id)


def resolved(connection: Connection, locations: Iterable[Location]) -> set[Location]:
    """The Kafka dead-letter records among ``locations`` that were replayed or discarded."""
    wanted = set(locations)
    topics = {topic for topic, _, _ in wanted}
    if not topics:
        return set()
    columns = (dlq_resolved.c.topic, dlq_resolved.c.partition_no, dlq_resolved.c.record_offset)
    found = connection.execute(select(*columns).where(dlq_resolved.c.topic.in_(topics)))
    return wanted & {(row[0], int(row[1]), int(row[2])) for row in found}


def forget_gone(connection: Connection, log_starts: Mapping[tuple[str, int], int]) -> int:
    """Delete the marks of records below the log start of their ``(topic, partition)``; how many."""
    gone = [
        {"t": topic, "p": partition, "start": start}
        for (topic, partition), start in sorted(log_starts.items())
        if start > 0
    ]
    if not gone:
        return 0
    statement = delete(dlq_resolved).where(
        dlq_resolved.c.topic == bindparam("t"),
        dlq_resolved.c.partition_no == bindparam("p"),
        dlq_resolved.c.record_offset < bindparam("start"),
    )
    return sum(connection.execute(statement, row).rowcount for row in gone)


def mark_resolved(
    connection: Connection,
    location: Location,
    action: str,
    *,
    handler: str | None = None,
    event_id: uuid.UUID | None = None,
) -> None:
    """Record that the Kafka dead-letter record at ``location`` was replayed or discarded."""
    topic, partition, offset = location
    connection.execute(
        insert(dlq_resolved).values(
            topic=topic,
            partition_no=partition,
            record_offset=offset,
            handler=handler,
            event_id=event_id,
            action=action,
            resolved_at=datetime.now(UTC),
        )
    )


class SqlDeadLetterStore:
    """DeadLetterStore on ``eventseam_dead_letter`` (see the module docstring). Thread safe."""

    def __init__(
        self, engine: Engine, registry: EventRegistry, *, keys: SubjectKeys | None = None
    ) -> None:
        self._engine, self._registry, self._keys = engine, registry, keys
        self._unsaved = InMemoryDeadLetterStore()

    def add(self, letter: DeadLetter) -> None:
        """Insert ``letter``; keep it in memory (and log) when the database refuses."""
        try:
            with self._engine.begin() as connection:
                record = _encoded(letter, self._keys, connection)
                connection.execute(insert(dead_letter).values(_row_values(record, letter)))
        except (SQLAlchemyError, EngineError) as exc:  # EngineError: the event does not encode
            self._unsaved.add(letter)
            _log.error(
                "dead_letters.persist_failed",
                dead_letter_id=str(letter.id),
                handler=letter.handler,
                event_id=str(letter.event.event_id),
                error=error_line(exc),
                kept="in memory",
            )

    def list(self, *, handler: str | None = None) -> builtins.list[DeadLetter]:
        """Stored letters in insertion order, then those kept in memory."""
        letters = []
        with self._engine.connect() as connection:
            for row in list_stored(connection, handler=handler):
                try:
                    letters.append(self._letter(row, connection))
                except DecodeError as exc:
                    _log.warning(
                        "dead_letters.undecodable", dead_letter_id=str(row.id), error=str(exc)
                    )
        return letters + self._unsaved.list(handler=handler)

    def get(self, letter_id: uuid.UUID) -> DeadLetter:
        """The letter ``letter_id``; UnknownDeadLetterError when absent."""
        try:
            with self._engine.connect() as connection:
                return self._letter(get_stored(connection, letter_id), connection)
        except UnknownDeadLetterError:
            return self._unsaved.get(letter_id)

    def remove(self, letter_id: uuid.UUID) -> DeadLetter:
        """Delete and return the letter ``letter_id``; UnknownDeadLetterError when absent."""
        try:
            with self._engine.begin() as connection:
                letter = self._letter(get_stored(connection, letter_id), connection)
                delete_stored(connection, letter_id)
        except UnknownDeadLetterError:
            return self._unsaved.remove(letter_id)
        return letter

    def count(self, *, handler: str | None = None) -> int:
        """How many letters are kept (stored and in memory), optionally only ``handler``'s."""
        query = select(func.count()).select_from(dead_letter)
        if handler is not None:
            query = query.where(dead_letter.c.handler == handler)
        with self._engine.connect() as connection:
            stored = int(connection.execute(query).scalar_one())
        return stored + self._unsaved.count(handler=handler)

    def _letter(self, row: StoredDeadLetter, connection: Connection) -> DeadLetter:
        """The stored letter with its event decoded and personal-data fields opened."""
        event = row.event(self._registry)
        if self._keys is not None and type(event).personal_fields:
            from .crypto_events import open_events

            (event,) = open_events(self._keys, connection, [event])
        return DeadLetter(
            handler=row.handler,
            event=event,
            error_type=row.error_type,
            error_message=row.error_message,
            traceback=row.traceback,
            attempts=row.attempts,
            reason="shutdown" if row.reason == "shutdown" else "failed",
            failed_at=row.failed_at,
            id=row.id,
        )
