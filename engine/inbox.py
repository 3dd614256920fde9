"""The inbox: apply each event at most once per handler, in the handler's own transaction.

A handler that writes to the database claims ``(handler, event_id)`` first, in the transaction
that also holds its own writes; the commit makes both durable together and a rollback removes
both, so the event is applied again on the next delivery::

    with session.begin():
        if not inbox.claim(session, spec.name, event.event_id, event.event_name, context=event.source):
            return  # applied before (or being applied right now by another process)
        ...  # the handler's own writes on ``session``

The consumer runner claims a whole batch first, with one statement on PostgreSQL::

    new = inbox.claim_many(session, handler, batch)
    ...  # apply the events whose id is in ``new``, in the same transaction

``filter_new`` + ``record_many`` are the two-step form (look up, apply, then record). On
PostgreSQL the batch statements bind a fixed set of parameters whatever the batch size (arrays,
or ``claim_many``'s ids packed in one bytea): one cached statement (a multi-row VALUES insert is
compiled anew for every batch and ran about 12x slower, measured). SQLite runs the cached
single-row INSERT through one ``executemany`` call (in-process, no round trips).

Every function runs on the caller's ``Connection`` or ``Session`` and never commits, except
``purge`` (a maintenance job that commits after each bounded batch). Async callers use the
``*_async`` twins, which run the same code through ``run_sync``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar

from sqlalchemy import (
    DateTime,
    String,
    Uuid,
    bindparam,
    column,
    delete,
    func,
    insert,
    literal_column,
    select,
    text,
    true,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from outbox.inbox_table import inbox

from .dead_letter_marks import purge_statement as marks_purge_statement
from .expiry import delete_in_batches

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from sqlalchemy import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
    from sqlalchemy.sql.dml import Delete, Insert
    from sqlalchemy.sql.elements import TextClause

    from .events import DomainEvent

EventId = uuid.UUID | str
"""An event id as a UUID or its string form."""

_T = TypeVar("_T")

#: Ids per SELECT where ids are bound one by one (SQLite and other non-PostgreSQL databases):
#: stays well under SQLite's 32,766 bind parameters. PostgreSQL binds one array instead.
CHUNK: Final = 2_000

#: Recorded ids among ``:ids``: one primary-key probe per id (LATERAL ... LIMIT 1), a plan
#: that holds on a fresh table whose statistics are stale; ``event_id = ANY(:ids)`` was planned
#: as a scan of all the handler's rows there and slowed down as the inbox grew (measured).
_WANTED = (
    func.unnest(bindparam("ids", type_=postgresql.ARRAY(Uuid())))
    .table_valued(column("id", Uuid()))
    .render_derived(name="wanted")
)
_HIT = (
    select(literal_column("1"))
    .where(inbox.c.handler == bindparam("h", type_=String()), inbox.c.event_id == _WANTED.c.id)
    .limit(literal_column("1"))
    .lateral("hit")
)
_PG_FILTER_NEW = select(_WANTED.c.id).select_from(_WANTED.join(_HIT, true()))
_PG_RECORD_MANY = insert(inbox).from_select(
    ["handler", "event_id", "event_type", "context", "processed_at"],
    select(
        bindparam("h", type_=String()),
        func.unnest(bindparam("ids", type_=postgresql.ARRAY(Uuid()))),
        func.unnest(bindparam("types", type_=postgresql.ARRAY(String()))),
        func.unnest(bindparam("contexts", type_=postgresql.ARRAY(String()))),
        bindparam("at", type_=DateTime(timezone=True)),
    ),
)


def _pg_claim_many(kinds: str, *, on_conflict: bool) -> TextClause:
    """``claim_many`` on PostgreSQL: insert the batch's rows in one statement.

    The ids travel as ONE bytea of 16-byte UUIDs (``:ids``, ``:n`` of them): psycopg dumps a
    ``uuid[]`` parameter item by item in Python (text form, a regex per item), which cost more
    than the rest of the batch statement together (measured: 0.6 against 4 us of client CPU per
    event for filter_new + record_many). ``kinds`` selects each row's event type and context:
    two scalars, or arrays by position.

    Without ``on_conflict``: a plain INSERT, which fails on an id already recorded (half the
    server time of ``ON CONFLICT DO NOTHING``, measured: 12 against 23 ms for 2,000 rows).
    With it: skips such ids and returns them (only those, usually none).
    """
    rows = (
        "WITH wanted AS ("
        " SELECT CAST(encode(substring(:ids FROM i * 16 + 1 FOR 16), 'hex') AS uuid) AS id,"
        f" {kinds} FROM generate_series(0, :n - 1) AS i)"
    )
    insert_rows = (
        f"INSERT INTO {inbox.name} (handler, event_id, event_type, context, processed_at)"
        " SELECT :h, id, event_type, context, CAST(:at AS timestamptz) FROM wanted"
    )
    if not on_conflict:
        return text(f"{rows} {insert_rows}")
    return text(
        f"{rows}, claimed AS ({insert_rows} ON CONFLICT DO NOTHING RETURNING event_id)"
        " SELECT id FROM wanted WHERE id NOT IN (SELECT event_id FROM claimed)"
    )


_PG_UNIFORM_KINDS: Final = "CAST(:t AS varchar) AS event_type, CAST(:c AS varchar) AS context"
_PG_MIXED_KINDS: Final = (
    "(CAST(:types AS varchar[]))[i + 1] AS event_type,"
    " (CAST(:contexts AS varchar[]))[i + 1] AS context"
)
#: (plain INSERT, INSERT ... ON CONFLICT returning the ids skipped), per kinds form.
_PG_CLAIM_UNIFORM = (
    _pg_claim_many(_PG_UNIFORM_KINDS, on_conflict=False),
    _pg_claim_many(_PG_UNIFORM_KINDS, on_conflict=True),
)
_PG_CLAIM_MIXED = (
    _pg_claim_many(_PG_MIXED_KINDS, on_conflict=False),
    _pg_claim_many(_PG_MIXED_KINDS, on_conflict=True),
)


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """One applied event, as ``record_many`` stores it."""

    event_id: uuid.UUID
    event_type: str | None = None
    context: str | None = None

    @classmethod
    def of(cls, event: DomainEvent) -> InboxEntry:
        """The entry of ``event`` (its id, wire name and publishing context)."""
        return cls(event.event_id, event.event_name, event.source)


def already_applied(target: Connection | Session, handler: str, event_id: EventId) -> bool:
    """True when ``handler`` recorded ``event_id`` (committed, or earlier in this transaction)."""
    query = select(inbox.c.event_id).where(
        inbox.c.handler == handler, inbox.c.event_id == _uuid(event_id)
    )
    return _connection(target).execute(query).first() is not None


def record(
    target: Connection | Session,
    handler: str,
    event_id: EventId,
    event_type: str | None = None,
    *,
    context: str | None = None,
    processed_at: datetime | None = None,
) -> None:
    """Record that ``handler`` applied ``event_id``, in the caller's transaction.

    Raises sqlalchemy's IntegrityError when the pair is already recorded (on PostgreSQL that
    aborts the transaction): use ``claim`` when a duplicate is expected.
    """
    row = _row(handler, InboxEntry(_uuid(event_id), event_type, context), _utc(processed_at))
    _connection(target).execute(insert(inbox).values(row))


def claim(
    target: Connection | Session,
    handler: str,
    event_id: EventId,
    event_type: str | None = None,
    *,
    context: str | None = None,
    processed_at: datetime | None = None,
) -> bool:
    """Insert the inbox row first; True when this transaction won, False when it was taken.

    The insert ignores a primary-key conflict (``ON CONFLICT DO NOTHING`` on PostgreSQL and
    SQLite), so losing never aborts the caller's transaction. A concurrent claimer of the same
    pair waits for this transaction: it gets False if this one commits, True if it rolls back.
    Run the handler only on True, in the same transaction.
    """
    connection = _connection(target)
    row = _row(handler, InboxEntry(_uuid(event_id), event_type, context), _utc(processed_at))
    statement = _IGNORING_CONFLICT.get(connection.dialect.name)
    if statement is None:
        return _claim_with_savepoint(connection, row)
    result = connection.execute(statement.values(row).execution_options(preserve_rowcount=True))
    return result.rowcount == 1


def filter_new(
    target: Connection | Session, handler: str, event_ids: Iterable[EventId]
) -> set[uuid.UUID]:
    """The ids among ``event_ids`` that ``handler`` has not recorded.

    One SELECT on PostgreSQL whatever the batch size; one per CHUNK ids elsewhere.
    """
    wanted = {_uuid(event_id) for event_id in event_ids}
    if not wanted:
        return wanted
    connection = _connection(target)
    if connection.dialect.name == "postgresql":
        params = {"h": handler, "ids": list(wanted)}
        wanted.difference_update(connection.execute(_PG_FILTER_NEW, params).scalars())
        return wanted
    for chunk in _chunks(list(wanted)):
        query = select(inbox.c.event_id).where(
            inbox.c.handler == handler, inbox.c.event_id.in_(chunk)
        )
        wanted.difference_update(connection.execute(query).scalars())
    return wanted


def record_many(
    target: Connection | Session,
    handler: str,
    rows: Iterable[InboxEntry],
    *,
    processed_at: datetime | None = None,
) -> int:
    """Record every entry for ``handler`` in one statement execution; returns how many.

    Entries repeating an event id are stored once. Raises IntegrityError when one is already
    recorded (filter them out with ``filter_new`` in the same transaction first).
    """
    entries = _first_per_event(rows)
    if not entries:
        return 0
    when = _utc(processed_at)
    connection = _connection(target)
    if connection.dialect.name == "postgresql":
        params = {
            "h": handler,
            "ids": [entry.event_id for entry in entries],
            "types": [entry.event_type for entry in entries],
            "contexts": [entry.context for entry in entries],
            "at": when,
        }
        connection.execute(_PG_RECORD_MANY, params)
    else:
        connection.execute(insert(inbox), [_row(handler, entry, when) for entry in entries])
    return len(entries)


def claim_many(
    target: Connection | Session,
    handler: str,
    events: Sequence[DomainEvent],
    *,
    processed_at: datetime | None = None,
) -> set[uuid.UUID]:
    """The batch ``claim``: insert the inbox rows of ``events`` first; the ids claimed here.

    Apply exactly the events whose id is returned, in the same transaction (a rollback frees
    the claims). Ids already recorded are left out, and so are ids a concurrent transaction is
    recording when it commits (this one waits for it, as ``claim`` does). An id repeated in
    ``events`` is claimed once.

    PostgreSQL: one plain INSERT in a savepoint whatever the batch size (three round trips);
    when an id was recorded before, the savepoint is rolled back and ``INSERT ... ON CONFLICT
    DO NOTHING`` skips the recorded ones (the server logs that duplicate-key ERROR, once per
    redelivered batch). Each call is one subtransaction: call it once per transaction, as the
    runner does, not dozens of times (past 64, PostgreSQL's subtransaction cache overflows). SQLite: ``INSERT ... ON CONFLICT DO NOTHING
    RETURNING`` (one ``executemany``), so a pair another connection recorded meanwhile is
    skipped, not an IntegrityError. Elsewhere: ``filter_new`` then ``record_many``.
    """
    if not events:
        return set()
    connection = _connection(target)
    when = _utc(processed_at)
    if connection.dialect.name == "sqlite" and connection.dialect.insert_returning:
        entries = _first_per_event(InboxEntry.of(event) for event in events)
        rows = [_row(handler, entry, when) for entry in entries]
        return set(connection.execute(_SQLITE_CLAIM, rows).scalars())
    if connection.dialect.name != "postgresql":
        new = filter_new(connection, handler, [event.event_id for event in events])
        entries = [InboxEntry.of(event) for event in events if event.event_id in new]
        record_many(connection, handler, entries, processed_at=when)
        return new
    first = events[0]
    name, source = first.event_name, first.source
    params: dict[str, Any] = {
        "h": handler,
        "ids": b"".join([event.event_id.bytes for event in events]),
        "n": len(events),
        "at": when,
    }
    if all(event.event_name == name and event.source == source for event in events):
        (plain, skipping), params["t"], params["c"] = _PG_CLAIM_UNIFORM, name, source
    else:
        plain, skipping = _PG_CLAIM_MIXED
        params["types"] = [event.event_name for event in events]
        params["contexts"] = [event.source for event in events]
    claimed = {event.event_id for event in events}
    try:  # the usual batch holds no id recorded before: the plain INSERT, in a savepoint
        with connection.begin_nested():
            connection.execute(plain, params)
    except IntegrityError:  # one was (a redelivery, a repeat): again, skipping those
        claimed.difference_update(connection.execute(skipping, params).scalars())
    return claimed


def purge(
    connection: Connection, older_than: timedelta, batch: int, *, now: datetime | None = None
) -> int:
    """Delete rows processed more than ``older_than`` ago, ``batch`` rows per transaction.

    Commits after every batch so locks and WAL stay bounded: give it a connection of its own,
    not one inside ``engine.begin()`` or a business transaction. Returns the number deleted.
    """
    return delete_in_batches(connection, purge_statement(), _utc(now) - older_than, batch)


def purge_statement() -> Delete:
    """DELETE of up to ``:limit`` inbox rows processed before ``:cutoff`` (``purge``, the relay)."""
    doomed = (
        select(inbox.c.handler, inbox.c.event_id)
        .where(inbox.c.processed_at < bindparam("cutoff"))
        .limit(bindparam("limit"))
    )
    return delete(inbox).where(tuple_(inbox.c.handler, inbox.c.event_id).in_(doomed))


def window_purge_statements() -> tuple[Delete, Delete]:
    """The purge statements of every row kept for the inbox's window (InboxSettings): the inbox
    rows', then the runner's dead-letter marks' (engine.dead_letter_marks); for
    ``engine.expiry.delete_in_batches`` and the relay's Purger."""
    return purge_statement(), marks_purge_statement()


async def claim_async(
    target: AsyncConnection | AsyncSession,
    handler: str,
    event_id: EventId,
    event_type: str | None = None,
    *,
    context: str | None = None,
) -> bool:
    """``claim`` on an AsyncConnection or AsyncSession (same code, through ``run_sync``)."""
    return await target.run_sync(claim, handler, event_id, event_type, context=context)


async def filter_new_async(
    target: AsyncConnection | AsyncSession, handler: str, event_ids: Iterable[EventId]
) -> set[uuid.UUID]:
    """``filter_new`` on an AsyncConnection or AsyncSession (through ``run_sync``)."""
    return await target.run_sync(filter_new, handler, event_ids)


async def record_many_async(
    target: AsyncConnection | AsyncSession, handler: str, rows: Iterable[InboxEntry]
) -> int:
    """``record_many`` on an AsyncConnection or AsyncSession (through ``run_sync``)."""
    return await target.run_sync(record_many, handler, rows)


def _connection(target: Connection | Session) -> Connection:
    """The connection carrying the caller's transaction (a Session's is begun if needed)."""
    return target.connection() if isinstance(target, Session) else target


#: The inbox INSERT that skips a (handler, event_id) already recorded, per dialect.
_IGNORING_CONFLICT: Final[dict[str, Insert]] = {
    "postgresql": postgresql.insert(inbox).on_conflict_do_nothing(
        index_elements=list(inbox.primary_key)
    ),
    "sqlite": sqlite.insert(inbox).on_conflict_do_nothing(index_elements=list(inbox.primary_key)),
}
#: ``claim_many`` on SQLite: the rows that were inserted, conflicts skipped.
_SQLITE_CLAIM: Final = _IGNORING_CONFLICT["sqlite"].returning(inbox.c.event_id)


def _claim_with_savepoint(connection: Connection, row: dict[str, Any]) -> bool:
    """Portable claim for other dialects: a savepoint keeps the caller's transaction usable."""
    try:
        with connection.begin_nested():
            connection.execute(insert(inbox).values(row))
    except IntegrityError:
        return False
    return True


def _first_per_event(entries: Iterable[InboxEntry]) -> list[InboxEntry]:
    """``entries`` with each event id once (its first entry), in order."""
    unique: dict[uuid.UUID, InboxEntry] = {}
    for entry in entries:
        unique.setdefault(entry.event_id, entry)
    return list(unique.values())


def _row(handler: str, entry: InboxEntry, processed_at: datetime) -> dict[str, Any]:
    return {
        "handler": handler,
        "event_id": entry.event_id,
        "event_type": entry.event_type,
        "context": entry.context,
        "processed_at": processed_at,
    }


def _uuid(event_id: EventId) -> uuid.UUID:
    return event_id if isinstance(event_id, uuid.UUID) else uuid.UUID(event_id)


def _utc(moment: datetime | None) -> datetime:
    """``moment`` (now when None) in UTC; naive values are taken as UTC (SQLite drops offsets)."""
    if moment is None:
        return datetime.now(UTC)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]
