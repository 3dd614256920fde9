"""Outbox ``seq`` values are never reused, even after the relay deleted the newest rows.

On SQLite, ``seq`` was a plain ``INTEGER PRIMARY KEY`` (the rowid): a new row takes the largest
``seq`` left in the table plus one. Once the relay had sent and deleted the newest rows, the next
transaction reused their ``seq`` values, below the cursor of a relay in the middle of a scan
(``fetch(after=cursor)``) and possibly still in its held set: the relay then sent the rows of the
transaction above its cursor first, and an aggregate's event k+1 reached the topic before k
(docs/RELIABILITY.md, item 10 on SQLite). A delete by exact ``seq`` from a relay that acknowledged
an old row late could also have deleted a new, unsent row. PostgreSQL's sequence never goes back.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine, create_engine, delete, select

from engine.codec import EncodedEvent, encode
from engine.events import DomainEvent
from engine.modes import Mode
from outbox import migrate
from outbox.claim import Claims, create_relay_engine
from outbox.table import outbox
from outbox.writer import write
from tests.kafka_broker import create_outbox

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from sqlalchemy.ext.asyncio import AsyncEngine

pytestmark = pytest.mark.anyio

SLOTS = 64


class Counted(DomainEvent, name="tests.seq_reuse.Counted", version=1):
    """The ``n``-th event of its aggregate."""

    n: int


def insert(engine: Engine, *pairs: tuple[str, int]) -> None:
    """Write one row per (aggregate, n) in one transaction, with the real writer."""
    records: list[EncodedEvent] = [
        encode(Counted(aggregate_id=aggregate, n=n, source="orders")) for aggregate, n in pairs
    ]
    with engine.begin() as connection:
        write(connection, records, Mode.BROKER)


def seqs(engine: Engine) -> list[int]:
    """The ``seq`` of every row, ascending."""
    with engine.connect() as connection:
        return list(connection.scalars(select(outbox.c.seq).order_by(outbox.c.seq)))


@pytest.fixture
def sync_db(database_url: str) -> Iterator[Engine]:
    """A sync engine with the eventseam tables (created from the metadata)."""
    engine = create_outbox(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
async def relay_engine(database_url: str, sync_db: Engine) -> AsyncIterator[AsyncEngine]:
    """The relay's engine on the same database."""
    engine = create_relay_engine(database_url)
    yield engine
    await engine.dispose()


async def test_a_new_row_never_takes_the_seq_of_a_deleted_one(
    sync_db: Engine, relay_engine: AsyncEngine
) -> None:
    """After the relay deleted the newest rows, the next row's seq is above every seq ever used."""
    insert(sync_db, ("kept", 1), ("sent", 1), ("sent", 2))
    used = seqs(sync_db)
    claims = Claims(relay_engine, slots=SLOTS, delete_sent=True)
    try:
        await claims.mark_sent(used[1:])  # the newest rows were sent and deleted
        insert(sync_db, ("next", 1))
    finally:
        await claims.aclose()
    assert seqs(sync_db)[-1] > max(used), seqs(sync_db)


async def test_a_relay_mid_scan_sees_a_new_transaction_in_order(
    sync_db: Engine, relay_engine: AsyncEngine
) -> None:
    """A relay that fetched and deleted the newest rows, then fetches after its cursor, gets
    every row of the next transaction, in order: none of them falls at or below the cursor."""
    insert(sync_db, ("other-slot", 1), *[("earlier", n) for n in range(1, 5)])
    claims = Claims(relay_engine, slots=SLOTS, delete_sent=True)
    try:
        # The relay scanned past the first row (say, held by another relay's slot) and sent the rest.
        fetched = await claims.fetch(range(SLOTS), after=seqs(sync_db)[0], limit=4)
        cursor = fetched[-1].seq
        await claims.mark_sent([row.seq for row in fetched])
        insert(sync_db, *[("agg", n) for n in range(1, 9)])
        after_cursor = await claims.fetch(range(SLOTS), after=cursor, limit=100)
    finally:
        await claims.aclose()
    numbers = [json.loads(row.payload)["n"] for row in after_cursor]
    assert numbers == list(range(1, 9)), f"cursor {cursor}, fetched {numbers}"


def test_upgrading_an_existing_sqlite_outbox_keeps_its_rows_and_stops_the_reuse(
    sqlite_url: str,
) -> None:
    """Revision 0009 rebuilds an outbox made by 0001-0008 with its rows (seq kept); from then on
    a deleted top seq is not handed out again, and a downgrade brings the rows back too."""
    migrate.upgrade(sqlite_url, "0008")
    engine = create_engine(sqlite_url)
    try:
        insert(engine, ("a", 1), ("a", 2), ("b", 1))
        before = seqs(engine)
        migrate.upgrade(sqlite_url)
        assert seqs(engine) == before
        with engine.begin() as connection:
            connection.execute(delete(outbox).where(outbox.c.seq == before[-1]))
        insert(engine, ("c", 1))
        after = seqs(engine)
        assert after == [*before[:-1], after[-1]]
        assert after[-1] > before[-1], after  # the deleted seq stays used
        migrate.downgrade(sqlite_url, "0008")
        assert seqs(engine) == after
        migrate.upgrade(sqlite_url)
        assert seqs(engine) == after
    finally:
        engine.dispose()
