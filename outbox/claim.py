"""The relay's reads and writes on the outbox table: claim pending rows, mark sent rows.

A relay claims rows by *status*, never by "seq greater than the last one seen": a transaction
that commits after rows with larger ``seq`` were published still has ``status = 'pending'`` and
is found by the next scan from the start (``after=0``). ``after`` only skips the rows this relay
already holds in flight; the relay scans from the start again whenever its pipeline drains.

Rows belong to slots (``keyhash % slots``) leased to one relay at a time, so no row lock is
needed: only the slot's owner reads or marks its pending rows. Rows are marked by their exact
``seq`` values, never by a range, each mark being one autocommitted statement.

On PostgreSQL the statements take arrays (``= ANY($1)``) so each compiles and prepares once;
relay connections turn off sequential and bitmap scans, because the claim is a top-N walk of the
pending index that a planner with stale statistics (a freshly filled table) gets badly wrong.
With asyncpg the claim and the marks run as statements prepared on the driver's connection, the
claim's rows taken as asyncpg returns them (SQLAlchemy's result layer cost the relay about 0.5 us
per row, its execution path about 5 % of the relay's CPU on the marks).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio
import structlog
from sqlalchemy import (
    BigInteger,
    Integer,
    String,
    all_,
    any_,
    bindparam,
    case,
    delete,
    literal,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from .crash_points import CRASH_AT, crash_point
from .table import Status, outbox

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from sqlalchemy.sql import ColumnElement, Select

    from engine.retry import RetryPolicy

log = structlog.get_logger(__name__)

#: Columns the relay reads, in this order (see PendingRow).
CLAIM_COLUMNS = (
    outbox.c.seq,
    outbox.c.aggregatetype,
    outbox.c.aggregateid,
    outbox.c.type,
    outbox.c.payload,
    outbox.c.headers,
    outbox.c.keyhash,
)


#: Session settings of the connection that marks sent rows (PostgreSQL): its commits do not wait
#: for the WAL flush. A database crash may forget the last marks (at most 3 x wal_writer_delay);
#: those rows are then sent again and consumers drop the duplicates by event_id. Nothing is lost,
#: and relaying runs about 1.6x faster on this project's machines (one WAL flush per round).
ASYNC_COMMIT = ("SET synchronous_commit = off",)


#: ``status = 'pending'`` with the value inline, matching the partial index's predicate.
PENDING_ONLY = outbox.c.status == literal_column(f"'{Status.PENDING}'")


class PendingRow(NamedTuple):
    """A claimed outbox row, in claim order (``seq``)."""

    seq: int
    context: str
    key: str
    event_type: str
    payload: bytes
    headers: bytes
    keyhash: int


class FailedRow(NamedTuple):
    """A row after a failed attempt: its attempts so far and its status (pending or parked)."""

    seq: int
    id: Any
    key: str
    attempts: int
    status: str


#: Builds a PendingRow from any sequence of its values (an asyncpg Record) without the
#: keyword-argument machinery of ``PendingRow(*values)``.
_new_row = tuple.__new__


def _is_driver_error(exc: BaseException) -> bool:
    """True for asyncpg's own errors (raised by Link.fetch_raw, which bypasses SQLAlchemy)."""
    return type(exc).__module__.startswith("asyncpg")


def async_database_url(url: str) -> str:
    """The async twin of a sync database URL (asyncpg for PostgreSQL, aiosqlite for SQLite)."""
    parsed = make_url(url)
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend == "postgresql" and driver not in {"asyncpg", "psycopg_async"}:
        parsed = parsed.set(drivername="postgresql+asyncpg")
    elif backend == "sqlite" and driver != "aiosqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed.render_as_string(hide_password=False)


def create_relay_engine(
    url: str, *, pool_size: int = 6, command_timeout: float = 0.0
) -> AsyncEngine:
    """An AsyncEngine for the relay: autocommit statements, index-only plans on PostgreSQL.

    With ``command_timeout`` (seconds; 0: none) every statement and connect on PostgreSQL
    (asyncpg) fails with TimeoutError when the server has not answered by then, so a connection
    left half-open by the network (no reset ever arrives) is dropped and opened again instead of
    holding the relay forever.
    """
    target = make_url(async_database_url(url))
    kwargs: dict[str, Any] = {"isolation_level": "AUTOCOMMIT", "pool_pre_ping": True}
    if target.get_backend_name() == "postgresql":
        kwargs.update(pool_size=pool_size, max_overflow=pool_size)
        if target.get_driver_name() == "asyncpg":
            settings = {
                "enable_seqscan": "off",
                "enable_bitmapscan": "off",
                "application_name": "eventseam-relay",
            }
            kwargs["connect_args"] = {"server_settings": settings}
            if command_timeout:
                kwargs["connect_args"] |= {
                    "command_timeout": command_timeout,
                    "timeout": command_timeout,
                }
    elif target.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": 30}
    return create_async_engine(target, **kwargs)


def is_postgres(engine: AsyncEngine) -> bool:
    """True when ``engine`` talks to PostgreSQL."""
    return engine.dialect.name == "postgresql"


class Link:
    """One long-lived connection for one kind of statement; reopened after a failure.

    ``setup`` statements run on each new connection (session settings). Not for concurrent use:
    give each task its own Link.

    On SQLite a statement is never cancelled midway: it finishes (at most the busy timeout),
    then the cancellation lands. SQLAlchemy invalidates an aiosqlite connection whose statement
    was cancelled, and when the cancellation also interrupts that invalidation, the graceful
    close task it started waits forever for the connection's stopped thread: ``asyncio.run``
    then never returns and the relay process hangs after ``relay.stopped`` (found by
    tests/reliability/test_crash_points.py; regression test tests/integration/test_link_cancel.py).
    """

    def __init__(self, engine: AsyncEngine, setup: Sequence[str] = ()) -> None:
        self._engine = engine
        self._setup = tuple(setup)
        self._connection: AsyncConnection | None = None
        self._prepared: dict[Any, tuple[Any, list[str], dict[str, Any]]] = {}
        self._shielded = engine.dialect.name == "sqlite"

    async def _connect(self) -> AsyncConnection:
        if self._connection is None:
            self._connection = await self._engine.connect()
            for sql in self._setup:
                await self._connection.execute(text(sql))
        return self._connection

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        """Execute one autocommitted statement; the connection is dropped when it fails."""
        try:
            if self._shielded:
                with anyio.CancelScope(shield=True):
                    connection = await self._connect()
                    return await connection.execute(statement, parameters or {})
            connection = await self._connect()
            return await connection.execute(statement, parameters or {})
        except BaseException:
            await self.aclose()
            raise

    async def fetch_raw(self, statement: Any, parameters: dict[str, Any]) -> list[Any]:
        """Rows of a statement as asyncpg Records (asyncpg only), through SQLAlchemy's connection.

        The statement is prepared once per connection, runs without SQLAlchemy's execution and
        result layers (the relay's claim, 500 rows at a time, and its marks), and is
        autocommitted like ``execute``; bound values the statement carries are used unless
        ``parameters`` name them. Driver errors are raised as SQLAlchemy's OperationalError, and
        the connection is dropped, as in ``execute``.
        """
        try:
            connection = await self._connect()
            prepared = self._prepared.get(statement)
            if prepared is None:
                compiled = statement.compile(dialect=self._engine.dialect)
                raw = (await connection.get_raw_connection()).driver_connection
                assert raw is not None
                names = list(compiled.positiontup or ())
                carried = {name: compiled.binds[name].value for name in names}
                prepared = (await raw.prepare(str(compiled)), names, carried)
                self._prepared[statement] = prepared
            query, names, carried = prepared
            records: list[Any] = await query.fetch(
                *[parameters.get(name, carried[name]) for name in names]
            )
            return records
        except BaseException as exc:
            await self.aclose()
            if _is_driver_error(exc):
                raise OperationalError(str(statement), parameters, exc) from exc
            raise

    async def aclose(self) -> None:
        """Return the connection (invalidated, so a broken one or its settings are never reused)."""
        connection, self._connection = self._connection, None
        self._prepared.clear()
        if connection is not None:
            with anyio.CancelScope(shield=True):
                try:
                    await connection.invalidate()
                finally:
                    await connection.close()


class Claims:
    """Statements on the outbox table, compiled once per dialect and reused.

    ``fetch`` and ``mark_sent`` may run at the same time from two tasks; each uses its own Link.
    """

    def __init__(self, engine: AsyncEngine, *, slots: int, delete_sent: bool) -> None:
        self._postgres = is_postgres(engine)
        self._raw_fetch = self._postgres and engine.dialect.driver == "asyncpg"
        self._slots = slots
        self._delete_sent = delete_sent
        self._reader, self._failures = Link(engine), Link(engine)
        self._writer = Link(engine, ASYNC_COMMIT if self._postgres else ())
        self._fetches: dict[tuple[bool, bool], Select[Any]] = {}
        self._mark = self._mark_statement()

    async def aclose(self) -> None:
        """Close the connections."""
        for link in (self._reader, self._writer, self._failures):
            await link.aclose()

    def _seqs(self) -> ColumnElement[bool]:
        if self._postgres:
            return outbox.c.seq == any_(bindparam("seqs", type_=ARRAY(BigInteger)))
        return outbox.c.seq.in_(bindparam("seqs", expanding=True))

    def _fetch_statement(self, by_slot: bool, excluding: bool) -> Select[Any]:
        # 'pending' and the slot count are literals: a prepared statement's generic plan can then
        # still walk the partial pending index (a parameter there gets a full sort of the backlog).
        query = select(*CLAIM_COLUMNS).where(PENDING_ONLY, outbox.c.seq > bindparam("after"))
        if by_slot:
            slot = outbox.c.keyhash % literal_column(str(int(self._slots)))
            if self._postgres:
                query = query.where(slot == any_(bindparam("slots", type_=ARRAY(Integer))))
            else:
                query = query.where(slot.in_(bindparam("slots", expanding=True)))
        if excluding:
            if self._postgres:
                query = query.where(
                    outbox.c.aggregateid != all_(bindparam("keys", type_=ARRAY(String)))
                )
            else:
                query = query.where(outbox.c.aggregateid.not_in(bindparam("keys", expanding=True)))
        return query.order_by(outbox.c.seq).limit(bindparam("limit"))

    async def fetch(
        self, slots: Collection[int], *, after: int, limit: int, exclude_keys: Collection[str] = ()
    ) -> list[PendingRow]:
        """Up to ``limit`` pending rows of ``slots`` with ``seq > after``, in ``seq`` order.

        Rows whose aggregate id is in ``exclude_keys`` (aggregates waiting out a backoff) are
        left out, so they never hide the rows of other aggregates behind them.
        """
        by_slot = len(slots) < self._slots
        variant = (by_slot, bool(exclude_keys))
        statement = self._fetches.get(variant)
        if statement is None:
            statement = self._fetches[variant] = self._fetch_statement(*variant)
        parameters: dict[str, Any] = {"after": after, "limit": limit}
        if by_slot:
            parameters["slots"] = sorted(slots)
        if exclude_keys:
            parameters["keys"] = list(exclude_keys)
        if self._raw_fetch:
            records = await self._reader.fetch_raw(statement, parameters)
            return [_new_row(PendingRow, record) for record in records]
        result = await self._reader.execute(statement, parameters)
        return [PendingRow(*row) for row in result]

    def _mark_statement(self) -> Any:
        if self._delete_sent:
            return delete(outbox).where(self._seqs())
        values = {"status": Status.PUBLISHED, "published_at": bindparam("now")}
        return update(outbox).where(self._seqs(), outbox.c.status == Status.PENDING).values(values)

    async def mark_sent(self, seqs: Sequence[int]) -> None:
        """Delete the rows, or mark them published (retention), by their exact ``seq``."""
        parameters = {"seqs": list(seqs), "now": datetime.now(UTC)}
        if self._raw_fetch:
            await self._writer.fetch_raw(self._mark, parameters)
        else:
            await self._writer.execute(self._mark, parameters)

    async def record_failure(
        self, seqs: Sequence[int], error: str, *, max_attempts: int
    ) -> list[FailedRow]:
        """Count a failed attempt on each row; park the rows that reached ``max_attempts``."""
        attempts = outbox.c.attempts + 1
        status = _case_parked(attempts, max_attempts)
        statement = (
            update(outbox)
            .where(self._seqs(), outbox.c.status == Status.PENDING)
            .values(attempts=attempts, last_error=error[:2000], status=status)
            .returning(
                outbox.c.seq, outbox.c.id, outbox.c.aggregateid, outbox.c.attempts, outbox.c.status
            )
        )
        result = await self._failures.execute(statement, {"seqs": list(seqs)})
        return [FailedRow(*row) for row in result]


def _case_parked(attempts: ColumnElement[int], max_attempts: int) -> ColumnElement[str]:
    return case((attempts >= max_attempts, literal(Status.PARKED)), else_=outbox.c.status)


class Marker:
    """Marks acknowledged rows in the background: one statement per flush, retried until it lands.

    ``add`` never blocks the sender; ``drained`` waits until every added row is marked. If the
    process dies first, those rows are sent again (duplicates only for the batch in flight).
    """

    #: Rows per statement (SQLite caps bound parameters).
    CHUNK = 5_000
    #: Fewer queued rows than this wait ``LINGER`` seconds for more before a flush: at low rates
    #: one statement per acknowledgement costs the relay and the database a round trip each.
    LINGER_BELOW = 100
    LINGER = 0.005

    def __init__(self, claims: Claims, policy: RetryPolicy) -> None:
        self._claims, self._policy = claims, policy
        self._pending: list[int] = []
        self._wake = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        #: Rows added and possibly still seen as pending by a fetch (see ``take_marked``).
        self.outstanding: set[int] = set()
        self._marked: list[list[int]] = []

    def add(self, seqs: list[int]) -> None:
        """Queue acknowledged rows for marking."""
        self._pending.extend(seqs)
        self.outstanding.update(seqs)
        self._wake.set()
        if self._idle.is_set():
            self._idle = anyio.Event()

    def take_marked(self) -> list[list[int]]:
        """The rows marked (committed) since the last call.

        Call before sending a fetch, and ``forget`` them once it returned: that fetch cannot
        see them as pending any more. Rows marked while it runs stay ``outstanding`` until the
        next fetch, so a fetch whose snapshot predates their mark never hands them out again.
        """
        marked, self._marked = self._marked, []
        return marked

    def forget(self, marked: list[list[int]]) -> None:
        """Drop rows returned by ``take_marked`` from ``outstanding``."""
        for chunk in marked:
            self.outstanding.difference_update(chunk)

    async def drained(self) -> None:
        """Return once every queued row is marked."""
        while not (self._idle.is_set() and not self._pending):
            await self._idle.wait()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Mark queued rows until cancelled."""
        task_status.started()
        while True:
            await self._wake.wait()
            if len(self._pending) < self.LINGER_BELOW:
                await anyio.sleep(self.LINGER)
            self._wake = anyio.Event()
            await self.flush()

    async def flush(self) -> None:
        """Mark everything queued now, retrying database failures with backoff."""
        failures = 0
        while self._pending:
            chunk, self._pending = self._pending[: self.CHUNK], self._pending[self.CHUNK :]
            try:
                await self._claims.mark_sent(chunk)
                if CRASH_AT:
                    crash_point("after_mark")
                self._marked.append(chunk)
                failures = 0
            except (SQLAlchemyError, OSError) as exc:
                self._pending[:0] = chunk
                failures += 1
                log.warning("outbox.mark_failed", rows=len(chunk), error=str(exc), attempt=failures)
                await anyio.sleep(self._policy.delay(failures))
        self._idle.set()
