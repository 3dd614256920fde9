"""Dead-letter marks: one dead-letter record per poison record and handler, even across kills.

The bundled broker has no Kafka transactions, so "produce the dead-letter record" and "commit
the offset past the poison record" cannot be one atomic step: a worker killed between the two
used to dead-letter the record again when its partition was redelivered. The runner therefore
keeps a mark per ``(handler, topic, partition, offset)`` in ``eventseam_dlq_sent``
(outbox/dead_letter_table.py), next to the inbox, around each dead-letter record::

    mark "sending" (committed)  ->  produce, wait for the ack  ->  mark "sent" (committed)

On a redelivery (``DeadLetterLedger.before_send``):

* no mark: the record was never produced: mark ``sending`` and produce;
* ``sent``: the broker holds it: not produced again (and the handler is not retried first:
  ``is_sent``);
* ``sending``: the kill fell between the mark and the ``sent`` update, so the record may or may
  not be on the dead-letter topic. That topic is read (it is per handler and small) for a record
  with the same ``dlq_handler`` and ``dlq_original_topic/partition/offset``: found, it is marked
  ``sent`` and not produced; else it is produced.

Neither a lost nor a duplicate dead letter for a killed worker: the mark is committed before
the produce (so an unmarked record was never produced) and the topic is read only in the narrow
``sending`` case (so the hot path stays one small insert and one update per dead letter, never
a topic scan). The simpler alternatives each leave a window: marking only after the ack still
duplicates when the kill lands between ack and mark; an outbox row produced later needs
idempotent produce, which the bundled broker lacks. Without a topic reader (a runner given a
test publisher) a ``sending`` record is produced again. A mark also carries the record's
``ce_id``: a mark whose event id differs (the topic was recreated, offsets restarted) is
ignored and replaced.

A mark matters only while its record can still be delivered to its handler again, which the
inbox's window bounds as well (InboxSettings.retention_seconds): marks older than it are purged
with the inbox rows, by the relay's Purger and by ``eventseam inbox purge`` (``purge_statement``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Protocol

import anyio.to_thread
import structlog
from sqlalchemy import and_, bindparam, delete, insert, select, tuple_
from sqlalchemy.exc import SQLAlchemyError

from outbox.dead_letter_table import dlq_sent

from .dead_letter_topic import is_dead_letter_of
from .errors import ConsumeError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlalchemy import Connection
    from sqlalchemy.sql import Delete
    from sqlalchemy.sql.elements import ColumnElement

    from .consumer import Record
    from .topic_records import TopicReader

SENDING: Final = "sending"
SENT: Final = "sent"

log = structlog.get_logger(__name__)


class Transactions(Protocol):
    """Runs a function on a connection in a transaction of its own (InboxApplier.run_exclusive)."""

    def run_exclusive(self, action: Callable[[Connection], object]) -> object: ...


def event_id_of(record: Record) -> str | None:
    """The record's ``ce_id`` header as text (None when it has none: a malformed record)."""
    for key, value in record.headers:
        if key == "ce_id":
            return value.decode(errors="replace")[:100]
    return None


def _where(handler: str, record: Record) -> ColumnElement[bool]:
    return and_(
        dlq_sent.c.handler == handler,
        dlq_sent.c.topic == record.topic,
        dlq_sent.c.partition_no == record.partition,
        dlq_sent.c.record_offset == record.offset,
    )


def purge_statement() -> Delete:
    """DELETE of up to ``:limit`` marks made before ``:cutoff`` (``eventseam inbox purge``, the relay's Purger)."""
    key = (dlq_sent.c.handler, dlq_sent.c.topic, dlq_sent.c.partition_no, dlq_sent.c.record_offset)
    doomed = select(*key).where(dlq_sent.c.marked_at < bindparam("cutoff"))
    return delete(dlq_sent).where(tuple_(*key).in_(doomed.limit(bindparam("limit"))))


def state_of(connection: Connection, handler: str, record: Record) -> str | None:
    """The mark of ``record`` for ``handler``: SENDING, SENT or None (also for a stale mark)."""
    row = connection.execute(
        select(dlq_sent.c.state, dlq_sent.c.event_id).where(_where(handler, record))
    ).first()
    if row is None or row.event_id != event_id_of(record):
        return None
    return str(row.state)


def mark(
    connection: Connection, handler: str, record: Record, dead_letter_topic: str, state: str
) -> None:
    """Set the mark of ``record`` for ``handler`` to ``state`` (replacing any), uncommitted."""
    connection.execute(delete(dlq_sent).where(_where(handler, record)))
    connection.execute(
        insert(dlq_sent).values(
            handler=handler,
            topic=record.topic,
            partition_no=record.partition,
            record_offset=record.offset,
            event_id=event_id_of(record),
            dead_letter_topic=dead_letter_topic,
            state=state,
            marked_at=datetime.now(UTC),
        )
    )


class DeadLetterLedger:
    """The marks of one handler's dead letters (see the module docstring).

    ``database`` runs the mark statements (serialized like the inbox batches on SQLite);
    ``reader`` opens a TopicReader for the ``sending`` check (None: a ``sending`` record is
    produced again). ``pause(seconds)`` waits before a retry and returns False when the worker
    is interrupted; ``delay(failures)`` is the backoff.
    """

    def __init__(
        self,
        handler: str,
        database: Transactions,
        reader: Callable[[], TopicReader] | None,
        pause: Callable[[float], Awaitable[bool]],
        delay: Callable[[int], float],
    ) -> None:
        self.handler, self._database, self._reader = handler, database, reader
        self._pause, self._delay = pause, delay
        self._log = log.bind(handler=handler)

    async def is_sent(self, record: Record) -> bool:
        """True when ``record`` is marked SENT (no retry needed); False also when unreadable."""
        try:
            return await self._state(record) == SENT
        except SQLAlchemyError as exc:
            self._log.warning("consumer.dead_letter_mark_unreadable", error=str(exc))
            return False

    async def before_send(self, topic: str, record: Record) -> bool | None:
        """Before producing ``record``'s dead letter: True when it is on ``topic`` already.

        False: marked SENDING (committed), produce it now. None: interrupted while retrying a
        database or broker failure (nothing decided; the record is redelivered).
        """
        failures = 0
        while True:
            try:
                state = await self._state(record)
                if state == SENT:
                    return True
                if state == SENDING and await self._on_topic(topic, record):
                    await self._mark(topic, record, SENT)
                    self._log.info("consumer.dead_letter_found", topic=topic)
                    return True
                if state is None:
                    await self._mark(topic, record, SENDING)
                return False
            except (SQLAlchemyError, ConsumeError) as exc:
                failures += 1
                self._log.warning("consumer.dead_letter_mark_failed", error=str(exc))
                if not await self._pause(self._delay(failures)):
                    return None

    async def after_ack(self, topic: str, record: Record) -> bool:
        """Mark ``record`` SENT, retrying; False when interrupted first (it stays SENDING)."""
        failures = 0
        while True:
            try:
                await self._mark(topic, record, SENT)
                return True
            except SQLAlchemyError as exc:
                failures += 1
                self._log.warning("consumer.dead_letter_mark_failed", error=str(exc))
                if not await self._pause(self._delay(failures)):
                    return False

    async def _state(self, record: Record) -> str | None:
        def read(connection: Connection) -> str | None:
            return state_of(connection, self.handler, record)

        found = await anyio.to_thread.run_sync(self._database.run_exclusive, read)
        return found if isinstance(found, str) else None

    async def _mark(self, topic: str, record: Record, state: str) -> None:
        def write(connection: Connection) -> None:
            mark(connection, self.handler, record, topic, state)

        await anyio.to_thread.run_sync(self._database.run_exclusive, write)

    async def _on_topic(self, topic: str, record: Record) -> bool:
        """True when ``topic`` holds this handler's dead letter of ``record`` (ConsumeError)."""
        if self._reader is None:
            return False
        async with self._reader() as reader:
            letters = await reader.read(topic)
        return any(is_dead_letter_of(letter.headers, self.handler, record) for letter in letters)
