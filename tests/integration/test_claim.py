"""The relay's statements on the outbox: claim by status, exact-id marking, failures, parking, purging."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine, select, update

from engine.codec import EncodedEvent, encode
from engine.events import DomainEvent
from engine.modes import Mode
from engine.settings import RelaySettings
from outbox.claim import Claims, async_database_url
from outbox.errors import RowNotFoundError
from outbox.lease_table import relay_lease as relay_lease
from outbox.murmur2 import key_hash
from outbox.parked import discard_parked, list_parked, retry_all_parked, retry_parked
from outbox.retention import Purger
from outbox.table import Status, outbox
from outbox.writer import write

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

pytestmark = pytest.mark.anyio


class NoteTaken(DomainEvent, name="tests.claim.NoteTaken", version=1):
    """An event for claim tests."""

    n: int


def encoded(aggregate_id: str, n: int) -> EncodedEvent:
    """An encoded NoteTaken of ``aggregate_id``."""
    return encode(NoteTaken(aggregate_id=aggregate_id, n=n, source="orders"))


def insert(engine: Engine, *pairs: tuple[str, int], mode: Mode = Mode.BROKER) -> list[EncodedEvent]:
    """Write one row per (aggregate, n) in one transaction."""
    records = [encoded(aggregate, n) for aggregate, n in pairs]
    with engine.begin() as connection:
        write(connection, records, mode)
    return records


def statuses(engine: Engine) -> list[tuple[int, str, int]]:
    """(seq, status, attempts) of every row, in seq order."""
    with engine.connect() as connection:
        query = select(outbox.c.seq, outbox.c.status, outbox.c.attempts).order_by(outbox.c.seq)
        return [(row.seq, row.status, row.attempts) for row in connection.execute(query)]


def test_async_database_url_picks_async_drivers() -> None:
    """Sync URLs map to asyncpg and aiosqlite; async ones are kept."""
    assert async_database_url("postgresql+psycopg://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert async_database_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert (
        async_database_url("postgresql+psycopg_async://u@h/db")
        == "postgresql+psycopg_async://u@h/db"
    )
    assert async_database_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"


async def test_fetch_claims_by_status_in_seq_order(sync_db: Engine, relay_db: AsyncEngine) -> None:
    """A scan from the start returns every pending row in seq order, including rows below a previous cursor."""
    insert(sync_db, ("a", 1), ("b", 2), ("c", 3), ("d", 4))
    claims = Claims(relay_db, slots=64, delete_sent=True)
    first = await claims.fetch(range(64), after=0, limit=2)
    rest = await claims.fetch(range(64), after=first[-1].seq, limit=10)
    assert [row.key for row in first + rest] == ["a", "b", "c", "d"]
    await claims.mark_sent([first[1].seq, rest[0].seq])
    again = await claims.fetch(range(64), after=0, limit=10)
    assert [row.key for row in again] == ["a", "d"]
    assert again[0].payload == encoded("a", 1).value
    await claims.aclose()


async def test_fetch_filters_slots_and_held_back_aggregates(
    sync_db: Engine, relay_db: AsyncEngine
) -> None:
    """Only rows of the given slots are claimed, without the aggregates held back."""
    insert(sync_db, *[(f"k{n}", n) for n in range(40)])
    claims = Claims(relay_db, slots=4, delete_sent=True)
    rows = await claims.fetch({1, 3}, after=0, limit=100, exclude_keys=["k7", "k8"])
    wanted = {f"k{n}" for n in range(40) if key_hash(f"k{n}".encode()) % 4 in {1, 3}} - {"k7", "k8"}
    assert {row.key for row in rows} == wanted
    assert [row.seq for row in rows] == sorted(row.seq for row in rows)
    await claims.aclose()


async def test_mark_sent_touches_exact_ids_only(sync_db: Engine, relay_db: AsyncEngine) -> None:
    """Marking rows 1, 3 and 5 leaves 2 and 4 pending (never a range); with retention they become published."""
    insert(sync_db, *[(f"m{n}", n) for n in range(5)])
    seqs = [seq for seq, _, _ in statuses(sync_db)]
    deleting = Claims(relay_db, slots=64, delete_sent=True)
    await deleting.mark_sent([seqs[0], seqs[2]])
    assert [seq for seq, _, _ in statuses(sync_db)] == [seqs[1], seqs[3], seqs[4]]
    keeping = Claims(relay_db, slots=64, delete_sent=False)
    await keeping.mark_sent([seqs[4]])
    assert statuses(sync_db) == [
        (seqs[1], Status.PENDING, 0),
        (seqs[3], Status.PENDING, 0),
        (seqs[4], Status.PUBLISHED, 0),
    ]
    await deleting.aclose()
    await keeping.aclose()


async def test_record_failure_parks_after_max_attempts(
    sync_db: Engine, relay_db: AsyncEngine
) -> None:
    """Each failure counts an attempt and keeps the last error; the row is parked at max_attempts."""
    insert(sync_db, ("p", 1))
    claims = Claims(relay_db, slots=64, delete_sent=True)
    [row] = await claims.fetch(range(64), after=0, limit=1)
    first = await claims.record_failure([row.seq], "too large", max_attempts=2)
    assert [(r.attempts, r.status) for r in first] == [(1, Status.PENDING)]
    second = await claims.record_failure([row.seq], "too large", max_attempts=2)
    assert [(r.attempts, r.status, r.key) for r in second] == [(2, Status.PARKED, "p")]
    assert await claims.fetch(range(64), after=0, limit=10) == []
    await claims.aclose()


def test_parked_rows_can_be_listed_retried_and_discarded(sync_db: Engine) -> None:
    """Operators list parked rows, send them back to pending (attempts reset) or delete them; other ids raise RowNotFoundError."""
    records = insert(sync_db, ("x", 1), ("y", 2), ("z", 3))
    with sync_db.begin() as connection:
        connection.execute(
            update(outbox).values(status=Status.PARKED, attempts=5, last_error="boom")
        )
    listed = list_parked(sync_db)
    assert [row.event_id for row in listed] == [record.event_id for record in records]
    assert listed[0].last_error == "boom"
    assert listed[0].attempts == 5
    retry_parked(sync_db, records[0].event_id)
    discard_parked(sync_db, str(records[1].event_id))
    assert [status for _, status, _ in statuses(sync_db)] == [Status.PENDING, Status.PARKED]
    assert statuses(sync_db)[0][2] == 0
    with pytest.raises(RowNotFoundError):
        retry_parked(sync_db, records[0].event_id)  # pending now, not parked
    with pytest.raises(RowNotFoundError):
        discard_parked(sync_db, "not-a-uuid")
    assert retry_all_parked(sync_db) == 1
    assert list_parked(sync_db) == []


async def test_purger_deletes_expired_rows_in_bounded_batches(
    sync_db: Engine, relay_db: AsyncEngine, relay_deletes: list[int]
) -> None:
    """Published rows older than the window and old local rows are purged, purge_batch rows per statement; recent ones stay."""
    insert(sync_db, *[(f"old{n}", n) for n in range(12)])
    insert(sync_db, ("audit", 1), mode=Mode.LOCAL)
    insert(sync_db, ("fresh", 1))
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    with sync_db.begin() as connection:
        connection.execute(update(outbox).values(created_at=long_ago))
        old = outbox.c.aggregateid.like("old%")
        connection.execute(
            update(outbox).where(old).values(status=Status.PUBLISHED, published_at=long_ago)
        )
        connection.execute(
            update(outbox)
            .where(outbox.c.aggregateid == "fresh")
            .values(status=Status.PUBLISHED, published_at=datetime.now(UTC))
        )
    purger = Purger(
        relay_db, RelaySettings(retention_seconds=3600, purge_batch=5), active=lambda: True
    )
    assert await purger.purge_once() == 13
    assert max(relay_deletes) <= 5
    with sync_db.connect() as connection:
        assert connection.execute(select(outbox.c.aggregateid)).scalars().all() == ["fresh"]
    await purger.aclose()
