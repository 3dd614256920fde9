"""WriteStrategy.AT_COMMIT: outbox rows deferred to the COMMIT's flight (psycopg 3), else immediate.

Every entry point (Session, Connection, AsyncSession, AsyncConnection) keeps commit, rollback and
SAVEPOINT atomicity on SQLite (where AT_COMMIT is the immediate INSERT) and PostgreSQL; on
PostgreSQL the INSERT goes out with the COMMIT, a failing one fails the commit, and errors that
belong to publish time are still raised there.
"""

from __future__ import annotations

from contextlib import asynccontextmanager, contextmanager, suppress
from typing import TYPE_CHECKING, Any

import pytest
from psycopg import pq
from sqlalchemy import Connection, Engine, create_engine, func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from engine.bridge import SyncBridge
from engine.errors import EventTooLargeError, OwnershipError
from engine.modes import Mode
from engine.seam import EventSeam
from outbox.deferred import supported
from outbox.errors import OutsideTransactionError
from outbox.table import metadata as outbox_metadata
from outbox.table import outbox
from outbox.writer import WriteStrategy, write, write_async
from tests.conftest import async_url
from tests.integration.test_seam import (
    NothingOwned,
    Received,
    build_contexts,
    make_settings,
    order,
    outbox_rows,
)
from tests.integration.test_writer import (
    StatementLog,
    business,
    ids,
    make_records,
    orders,
)

if TYPE_CHECKING:
    import uuid
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from engine.codec import EncodedEvent

AT_COMMIT = WriteStrategy.AT_COMMIT
#: Engines opt in to the deferred write (it is off by default).
OPT_IN = {"eventseam_outbox_write": "at_commit"}
Target = Session | Connection
AsyncTarget = AsyncSession | AsyncConnection


# -- fixtures and helpers -------------------------------------------------------------------


def create_schema(engine: Engine) -> Engine:
    """Create the business table and the outbox on ``engine``'s database; return ``engine``."""
    business.create_all(engine)
    outbox_metadata.create_all(engine)
    return engine


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A sync engine on a fresh SQLite or PostgreSQL database with the tables."""
    engine = create_schema(create_engine(database_url, execution_options=OPT_IN))
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    """A sync psycopg engine on a fresh PostgreSQL database with the tables."""
    engine = create_schema(create_engine(postgres_url, execution_options=OPT_IN))
    yield engine
    engine.dispose()


@pytest.fixture
async def async_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An async engine (aiosqlite / psycopg async) on a fresh database with the tables."""
    create_schema(create_engine(database_url, execution_options=OPT_IN)).dispose()
    engine = create_async_engine(async_url(database_url), execution_options=OPT_IN)
    yield engine
    await engine.dispose()


@pytest.fixture(params=["session", "connection"])
def kind(request: pytest.FixtureRequest) -> str:
    """Which entry point (sync or async twin) the test drives."""
    return str(request.param)


@contextmanager
def begun(engine: Engine, kind: str) -> Iterator[Target]:
    """A Session or Connection with an open transaction; the test ends it."""
    if kind == "session":
        with Session(engine) as session:
            session.begin()
            yield session
    else:
        with engine.connect() as connection:
            connection.begin()
            yield connection


@asynccontextmanager
async def async_begun(engine: AsyncEngine, kind: str) -> AsyncIterator[AsyncTarget]:
    """An AsyncSession or AsyncConnection with an open transaction; the test ends it."""
    if kind == "session":
        async with AsyncSession(engine) as session:
            await session.begin()
            yield session
    else:
        async with engine.connect() as connection:
            await connection.begin()
            yield connection


def counts(engine: Engine) -> tuple[int, int]:
    """(committed business rows, committed outbox rows)."""
    with engine.connect() as connection:
        business_rows = connection.scalar(select(func.count()).select_from(orders))
        outbox_count = connection.scalar(select(func.count()).select_from(outbox))
    return int(business_rows or 0), int(outbox_count or 0)


def committed_ids(engine: Engine) -> list[uuid.UUID]:
    """Ids of the committed outbox rows, in write order."""
    with engine.connect() as connection:
        return list(connection.scalars(select(outbox.c.id).order_by(outbox.c.seq)))


def driver_of(target: Target) -> Any:
    """The psycopg connection under ``target``'s transaction (bypasses SQLAlchemy's events)."""
    connection = target.connection() if isinstance(target, Session) else target
    return connection.connection.driver_connection


def rows_seen_by_driver(target: Target) -> int:
    """Outbox rows visible inside ``target``'s transaction to SQL sent on the raw connection."""
    row = driver_of(target).execute("SELECT count(*) FROM eventseam_outbox").fetchone()
    return int(row[0])


def duplicate(records: list[EncodedEvent]) -> list[EncodedEvent]:
    """``records`` twice: the second copies break the outbox's unique event id at INSERT time."""
    return records + records


# -- commit, rollback, savepoints (SQLite and PostgreSQL) -----------------------------------


def test_commit_keeps_business_row_and_events(engine: Engine, kind: str) -> None:
    """A committed transaction keeps the business row and every event written AT_COMMIT."""
    first, second = make_records(2), make_records(3)
    with begun(engine, kind) as target:
        target.execute(insert(orders).values(id="order-1"))
        write(target, first, Mode.DUAL, strategy=AT_COMMIT)
        write(target, second, Mode.BROKER, strategy=AT_COMMIT)
        target.commit()
    assert counts(engine) == (1, 5)
    assert committed_ids(engine) == ids(first) + ids(second)


def test_rollback_removes_business_row_and_events(engine: Engine, kind: str) -> None:
    """A rolled-back transaction leaves neither the business row nor the deferred events."""
    with begun(engine, kind) as target:
        target.execute(insert(orders).values(id="order-1"))
        write(target, make_records(3), Mode.DUAL, strategy=AT_COMMIT)
        target.rollback()
    assert counts(engine) == (0, 0)


def test_savepoints_keep_only_what_survives(engine: Engine, kind: str) -> None:
    """Rows of a rolled-back SAVEPOINT (and of one released into it) vanish; the rest commit."""
    before, released, dropped, inner, after = (make_records(n) for n in (1, 2, 3, 1, 2))
    with begun(engine, kind) as target:
        write(target, before, Mode.DUAL, strategy=AT_COMMIT)
        with target.begin_nested():
            write(target, released, Mode.DUAL, strategy=AT_COMMIT)
        savepoint = target.begin_nested()
        write(target, dropped, Mode.DUAL, strategy=AT_COMMIT)
        with target.begin_nested():
            write(target, inner, Mode.DUAL, strategy=AT_COMMIT)
        savepoint.rollback()
        write(target, after, Mode.DUAL, strategy=AT_COMMIT)
        target.commit()
    assert committed_ids(engine) == ids(before) + ids(released) + ids(after)


def test_a_read_in_the_transaction_sees_the_rows(engine: Engine, kind: str) -> None:
    """Reading the outbox after publishing, in the same transaction, sees the deferred rows."""
    records = make_records(2)
    with begun(engine, kind) as target:
        write(target, records, Mode.DUAL, strategy=AT_COMMIT)
        seen = list(target.scalars(select(outbox.c.id).order_by(outbox.c.seq)))
        target.rollback()
    assert seen == ids(records)
    assert counts(engine) == (0, 0)


@pytest.mark.anyio
async def test_async_commit_rollback_and_savepoint(async_engine: AsyncEngine, kind: str) -> None:
    """AsyncSession/AsyncConnection: commit keeps, rollback and a rolled-back SAVEPOINT drop."""
    kept, dropped, rolled_back = make_records(2), make_records(3), make_records(1)
    async with async_begun(async_engine, kind) as target:
        await target.execute(insert(orders).values(id="order-1"))
        await write_async(target, kept, Mode.DUAL, strategy=AT_COMMIT)
        with suppress(ZeroDivisionError):
            async with target.begin_nested():
                await write_async(target, dropped, Mode.DUAL, strategy=AT_COMMIT)
                raise ZeroDivisionError
        await target.commit()
    async with async_begun(async_engine, kind) as target:
        await target.execute(insert(orders).values(id="order-2"))
        await write_async(target, rolled_back, Mode.DUAL, strategy=AT_COMMIT)
        await target.rollback()
    async with async_engine.connect() as connection:
        found = list(await connection.scalars(select(outbox.c.id).order_by(outbox.c.seq)))
        business_ids = set(await connection.scalars(select(orders.c.id)))
    assert (found, business_ids) == (ids(kept), {"order-1"})


# -- PostgreSQL: the INSERT travels with the COMMIT ------------------------------------------


def test_rows_wait_for_the_commit(pg_engine: Engine, kind: str) -> None:
    """On psycopg the rows are not inserted at publish time, nor by a later business INSERT."""
    records = make_records(2)
    with begun(pg_engine, kind) as target:
        write(target, records, Mode.DUAL, strategy=AT_COMMIT)
        target.execute(insert(orders).values(id="order-1"))
        waiting = rows_seen_by_driver(target)
        target.commit()
    assert waiting == 0
    assert committed_ids(pg_engine) == ids(records)


def test_insert_and_commit_share_one_flight(pg_engine: Engine, tmp_path: Path) -> None:
    """The deferred INSERT, the COMMIT and a single Sync are all sent before any reply is read."""
    trace_file = tmp_path / "libpq.trace"
    with pg_engine.connect() as connection:
        connection.begin()
        connection.execute(insert(orders).values(id="order-1"))
        write(connection, make_records(3), Mode.DUAL, strategy=AT_COMMIT)
        pgconn = driver_of(connection).pgconn
        with trace_file.open("w") as trace:
            pgconn.trace(trace.fileno())
            pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
            connection.commit()
            pgconn.untrace()
    messages = [line.split("\t") for line in trace_file.read_text().splitlines()]
    sent = [m[2].strip() for m in messages if m[0] == "F"]
    last_sent = max(i for i, m in enumerate(messages) if m[0] == "F")
    assert all(m[0] == "F" for m in messages[: last_sent + 1])
    assert sent.count("Sync") == 1
    assert any("INSERT INTO eventseam_outbox" in m[-1] for m in messages if m[0] == "F")
    assert any('"COMMIT"' in m[-1] for m in messages if m[0] == "F")
    assert counts(pg_engine) == (1, 3)


def test_failing_deferred_insert_fails_the_commit(pg_engine: Engine, kind: str) -> None:
    """An INSERT that fails at commit raises there and leaves neither business row nor events."""
    with begun(pg_engine, kind) as target:
        target.execute(insert(orders).values(id="order-1"))
        write(target, duplicate(make_records(2)), Mode.DUAL, strategy=AT_COMMIT)
        with pytest.raises(IntegrityError, match="eventseam_outbox") as caught:
            target.commit()
        target.rollback()
    assert any("deferred to the COMMIT" in note for note in caught.value.__notes__)
    assert counts(pg_engine) == (0, 0)


def test_connection_is_usable_after_a_failed_deferred_commit(pg_engine: Engine) -> None:
    """After a failed deferred commit the same Connection runs and commits a new transaction."""
    kept = make_records(1)
    with pg_engine.connect() as connection:
        connection.begin()
        write(connection, duplicate(make_records(1)), Mode.DUAL, strategy=AT_COMMIT)
        with pytest.raises(IntegrityError):
            connection.commit()
        connection.rollback()
        connection.begin()
        connection.execute(insert(orders).values(id="order-2"))
        write(connection, kept, Mode.DUAL, strategy=AT_COMMIT)
        connection.commit()
    assert (counts(pg_engine), committed_ids(pg_engine)) == ((1, 1), ids(kept))


def test_failing_insert_before_a_read_fails_that_statement(pg_engine: Engine, kind: str) -> None:
    """Rows written early for a reading statement fail that statement; the rollback keeps nothing."""
    with begun(pg_engine, kind) as target:
        target.execute(insert(orders).values(id="order-1"))
        write(target, duplicate(make_records(1)), Mode.DUAL, strategy=AT_COMMIT)
        with pytest.raises(IntegrityError) as caught:
            target.execute(text("SELECT count(*) FROM test_orders"))
        target.rollback()
    assert any("deferred to the next statement" in note for note in caught.value.__notes__)
    assert counts(pg_engine) == (0, 0)


@pytest.mark.anyio
async def test_async_failing_deferred_insert_fails_the_commit(postgres_url: str, kind: str) -> None:
    """psycopg async: a failing deferred INSERT fails the commit and nothing is committed."""
    sync_engine = create_schema(create_engine(postgres_url, execution_options=OPT_IN))
    engine = create_async_engine(async_url(postgres_url), execution_options=OPT_IN)
    try:
        async with async_begun(engine, kind) as target:
            await target.execute(insert(orders).values(id="order-1"))
            await write_async(target, duplicate(make_records(2)), Mode.DUAL, strategy=AT_COMMIT)
            with pytest.raises(IntegrityError, match="eventseam_outbox"):
                await target.commit()
            await target.rollback()
        assert counts(sync_engine) == (0, 0)
    finally:
        await engine.dispose()
        sync_engine.dispose()


def test_immediate_execution_option_opts_out(postgres_url: str) -> None:
    """An engine with eventseam_outbox_write="immediate" gets the INSERT at publish time."""
    engine = create_schema(
        create_engine(postgres_url, execution_options={"eventseam_outbox_write": "immediate"})
    )
    log = StatementLog(engine)
    try:
        with engine.begin() as connection:
            write(connection, make_records(2), Mode.DUAL, strategy=AT_COMMIT)
            inserted_at_publish = len(log.outbox_inserts())
    finally:
        log.close()
        engine.dispose()
    assert inserted_at_publish == 1


def test_only_one_phase_psycopg_transactions_defer(pg_engine: Engine, sqlite_url: str) -> None:
    """Two-phase transactions and non-psycopg drivers take the immediate INSERT."""
    with pg_engine.connect() as connection:
        connection.begin()
        assert supported(connection)
        connection.rollback()
        connection.begin_twophase()
        assert not supported(connection)
        connection.rollback()
    sqlite_engine = create_engine(sqlite_url)
    try:
        with sqlite_engine.begin() as connection:
            assert not supported(connection)
    finally:
        sqlite_engine.dispose()


# -- errors that belong to publish time ------------------------------------------------------


def test_write_errors_are_raised_at_publish_time(engine: Engine, kind: str) -> None:
    """No transaction, AUTOCOMMIT or mismatched modes raise at write() and defer nothing."""
    if kind == "session":
        with Session(engine) as session, pytest.raises(OutsideTransactionError):
            write(session, make_records(1), Mode.DUAL, strategy=AT_COMMIT)
    else:
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            connection.begin()
            with pytest.raises(OutsideTransactionError, match="AUTOCOMMIT"):
                write(connection, make_records(1), Mode.DUAL, strategy=AT_COMMIT)
    with begun(engine, kind) as target:
        with pytest.raises(ValueError, match="one per record"):
            write(target, make_records(2), [Mode.DUAL], strategy=AT_COMMIT)
        target.execute(insert(orders).values(id="order-1"))
        target.commit()
    assert counts(engine) == (1, 0)


@pytest.fixture
def seam(engine: Engine) -> Iterator[tuple[EventSeam, Received]]:
    """A running sync-host seam (bus in its own bridge) on the test database."""
    bridge = SyncBridge(name="test-writer-pipeline")
    received = Received()
    seam = EventSeam(
        make_settings(),
        build_contexts(received),
        session_factory=sessionmaker(engine),
        bridge=bridge,
    )
    seam.start_background()
    yield seam, received
    seam.stop()
    bridge.stop()


def test_seam_publish_errors_still_raise_at_publish(
    seam: tuple[EventSeam, Received], engine: Engine
) -> None:
    """Oversize and unowned events raise in publish; the transaction then commits without them."""
    publisher, received = seam
    huge = order("huge", note="x" * (publisher.settings.max_event_bytes + 1))
    with publisher.transaction() as uow:
        with pytest.raises(EventTooLargeError):
            uow.publish(order("small"), huge)
        with pytest.raises(OwnershipError):
            uow.publish(order("other"), NothingOwned(aggregate_id="n"))
        uow.publish(order("kept"))
    publisher.bridge.call(publisher.join)
    assert [row[0] for row in outbox_rows(engine, "orders.OrderPlaced")] == ["orders.OrderPlaced"]
    assert [e.order_id for e in received.of("order")] == ["kept"]  # type: ignore[attr-defined]


def publish_twice(publisher: EventSeam, engine: Engine, entry: str) -> None:
    """Write an order and publish one event twice (its second row breaks the unique id)."""
    event = order("twice")
    if entry == "session":
        with publisher.transaction() as uow:
            uow.session.execute(insert(orders).values(id="order-1"))
            uow.publish(event)
            uow.publish(event)
    else:
        with engine.begin() as connection:
            connection.execute(insert(orders).values(id="order-1"))
            publisher.publish(connection, event)
            publisher.publish(connection, event)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("entry", ["session", "connection"])
def test_seam_failed_deferred_commit_dispatches_nothing(
    seam: tuple[EventSeam, Received], engine: Engine, entry: str
) -> None:
    """When the deferred INSERT fails at commit, EventSeam dispatches none of the events."""
    publisher, received = seam
    with pytest.raises(IntegrityError):
        publish_twice(publisher, engine, entry)
    publisher.bridge.call(publisher.join)
    assert received.events == []
    assert publisher.undelivered == []
    assert counts(engine) == (0, 0)
