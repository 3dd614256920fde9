"""The outbox writer on an AsyncSession and AsyncConnection, against SQLite and PostgreSQL."""

from __future__ import annotations

from contextlib import asynccontextmanager
from datetime import UTC
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine

from engine.codec import decode_headers
from engine.modes import Mode
from outbox.errors import OutsideTransactionError
from outbox.murmur2 import key_hash
from outbox.table import metadata as outbox_metadata
from outbox.table import outbox
from outbox.writer import write_async
from tests.conftest import async_url
from tests.integration.test_writer import (
    StatementLog,
    business,
    ids,
    make_records,
    orders,
    rows_in,
)

if TYPE_CHECKING:
    import uuid
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio

AsyncTarget = AsyncSession | AsyncConnection


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An async engine on a fresh database holding the business table and the outbox."""
    engine = create_async_engine(async_url(database_url))
    async with engine.begin() as connection:
        await connection.run_sync(business.create_all)
        await connection.run_sync(outbox_metadata.create_all)
    yield engine
    await engine.dispose()


@pytest.fixture(params=["session", "connection"])
def kind(request: pytest.FixtureRequest) -> str:
    """Which async entry point the test drives."""
    return str(request.param)


@asynccontextmanager
async def begun(engine: AsyncEngine, kind: str) -> AsyncIterator[AsyncTarget]:
    """An AsyncSession or AsyncConnection with an open transaction; the test ends it."""
    if kind == "session":
        async with AsyncSession(engine) as session:
            await session.begin()
            yield session
    else:
        async with engine.connect() as connection:
            await connection.begin()
            yield connection


async def add_order(target: AsyncTarget, order_id: str) -> None:
    """The business write: one row in the test's own table."""
    await target.execute(insert(orders).values(id=order_id))


async def order_ids(engine: AsyncEngine) -> set[str]:
    """Ids of the committed business rows."""
    async with engine.connect() as connection:
        return set(await connection.scalars(select(orders.c.id)))


async def outbox_ids(engine: AsyncEngine) -> list[uuid.UUID]:
    """Ids of the committed outbox rows, in write order."""
    async with engine.connect() as connection:
        return list(await connection.scalars(select(outbox.c.id).order_by(outbox.c.seq)))


async def test_commit_keeps_business_row_and_events(engine: AsyncEngine, kind: str) -> None:
    """A committed transaction keeps the business row and every event written in it."""
    records = make_records(3)
    async with begun(engine, kind) as target:
        await add_order(target, "order-1")
        await write_async(target, records, Mode.DUAL)
        await target.commit()
    assert await order_ids(engine) == {"order-1"}
    assert await outbox_ids(engine) == ids(records)


async def test_rollback_removes_business_row_and_events(engine: AsyncEngine, kind: str) -> None:
    """A rolled-back transaction leaves neither the business row nor the events."""
    async with begun(engine, kind) as target:
        await add_order(target, "order-1")
        await write_async(target, make_records(3), Mode.DUAL)
        await target.rollback()
    assert await order_ids(engine) == set()
    assert await outbox_ids(engine) == []


async def test_rolled_back_savepoint_drops_only_its_events(engine: AsyncEngine, kind: str) -> None:
    """Events written inside a rolled-back SAVEPOINT vanish; those written outside it commit."""
    before, inside, after = make_records(2), make_records(3), make_records(1)
    async with begun(engine, kind) as target:
        await add_order(target, "order-1")
        await write_async(target, before, Mode.BROKER)
        savepoint = await target.begin_nested()
        await add_order(target, "order-2")
        await write_async(target, inside, Mode.BROKER)
        await savepoint.rollback()
        await write_async(target, after, Mode.BROKER)
        await target.commit()
    assert await order_ids(engine) == {"order-1"}
    assert await outbox_ids(engine) == ids(before) + ids(after)


async def test_batch_is_one_insert_statement(engine: AsyncEngine, kind: str) -> None:
    """Ten events go to the database as one multi-row INSERT statement, not an executemany."""
    log = StatementLog(engine.sync_engine)
    try:
        async with begun(engine, kind) as target:
            await add_order(target, "order-1")
            await write_async(target, make_records(10), Mode.DUAL)
            await target.commit()
    finally:
        log.close()
    inserts = log.outbox_inserts()
    assert len(inserts) == 1
    _, parameters, executemany = inserts[0]
    assert not executemany
    assert rows_in(parameters) == 10
    assert len(await outbox_ids(engine)) == 10


async def test_outside_transaction_is_refused(engine: AsyncEngine, kind: str) -> None:
    """An AsyncSession or AsyncConnection without an open transaction is refused."""
    if kind == "session":
        async with AsyncSession(engine) as session:
            with pytest.raises(OutsideTransactionError, match="has none"):
                await write_async(session, make_records(1), Mode.DUAL)
    else:
        async with engine.connect() as connection:
            with pytest.raises(OutsideTransactionError, match="has none"):
                await write_async(connection, make_records(1), Mode.DUAL)
    assert await outbox_ids(engine) == []


async def test_autocommit_isolation_is_refused(database_url: str, kind: str) -> None:
    """An async connection in AUTOCOMMIT isolation is refused even though it reports a transaction."""
    autocommit = create_async_engine(async_url(database_url), isolation_level="AUTOCOMMIT")
    try:
        async with begun(autocommit, kind) as target:
            with pytest.raises(OutsideTransactionError, match="AUTOCOMMIT"):
                await write_async(target, make_records(1), Mode.DUAL)
    finally:
        await autocommit.dispose()


async def test_rows_hold_the_encoded_bytes(engine: AsyncEngine, kind: str) -> None:
    """Each row holds the codec's exact bytes, the key hash, and the status its mode implies."""
    records = make_records(3)
    async with begun(engine, kind) as target:
        await write_async(target, records, [Mode.LOCAL, Mode.DUAL, Mode.BROKER])
        await target.commit()
    async with engine.connect() as connection:
        rows = (await connection.execute(select(outbox).order_by(outbox.c.seq))).mappings().all()
    assert [(row["mode"], row["status"]) for row in rows] == [
        ("local", "local"),
        ("dual", "pending"),
        ("broker", "pending"),
    ]
    for row, record in zip(rows, records, strict=True):
        assert row["id"] == record.event_id
        assert (row["aggregatetype"], row["aggregateid"]) == (record.context, record.aggregate_id)
        assert (row["type"], row["version"]) == (record.event_type, record.version)
        assert row["payload"] == record.value
        assert decode_headers(row["headers"]) == record.headers
        assert row["keyhash"] == key_hash(record.key)
        assert row["attempts"] == 0
        occurred = row["occurred_at"]
        assert (occurred if occurred.tzinfo else occurred.replace(tzinfo=UTC)) == record.occurred_at
