"""The local path shares the inbox with the Kafka path: each handler applies each event once.

An EventSeam with a database claims ``(handler, event_id)`` in the handler's transaction before
it runs the handler, on SQLite and PostgreSQL. The Kafka path (engine.runner) records the same
rows, so an event the runner applied first is skipped by the bus, and the other way round.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING

import anyio
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, func, select
from sqlalchemy.orm import sessionmaker

from engine import inbox
from engine.contexts import BoundedContext
from engine.events import DomainEvent
from engine.seam import EventSeam
from engine.settings import BusSettings, EventSeamSettings
from outbox.inbox_table import inbox as inbox_table
from outbox.table import metadata, outbox

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy import Engine

    from engine.handler_context import HandlerContext

pytestmark = pytest.mark.anyio


class SaleMade(DomainEvent, name="tests.inbox.SaleMade", version=1):
    """A sale was made at the till."""

    n: int
    fail_times: int = 0


class SaleBooked(DomainEvent, name="tests.inbox.SaleBooked", version=1):
    """The books took the sale (the follow-up of book_sale)."""

    n: int


rows = Table(
    "inbox_test_applied",
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("handler", String(100), nullable=False),
    Column("n", Integer, nullable=False),
)

till = BoundedContext("till", owns=[SaleMade])
books = BoundedContext("books", owns=[SaleBooked])
#: Calls per (handler, n), attempts included.
CALLS: Counter[tuple[str, int]] = Counter()


@books.handler(SaleMade, name="book_sale")
def book_sale(event: SaleMade, ctx: HandlerContext) -> None:
    """Write a row and publish SaleBooked; fail the first ``fail_times`` attempts after writing."""
    CALLS["book", event.n] += 1
    ctx.session.execute(rows.insert().values(handler="book", n=event.n))
    ctx.publish(SaleBooked(aggregate_id=event.aggregate_id, n=event.n))
    if ctx.attempt <= event.fail_times:
        raise RuntimeError(f"attempt {ctx.attempt} fails")


@books.handler(SaleMade, name="count_sale")
async def count_sale(event: SaleMade, ctx: HandlerContext) -> None:
    """An async handler: no session, its follow-up is buffered."""
    CALLS["count", event.n] += 1
    ctx.publish(SaleBooked(aggregate_id=event.aggregate_id, n=-event.n))


@books.handler(SaleMade, name="note_sale")
def note_sale(event: SaleMade) -> None:
    """A sync handler without a context."""
    CALLS["note", event.n] += 1


HANDLERS = ("books.book_sale", "books.count_sale", "books.note_sale")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A fresh database with the eventseam tables and inbox_test_applied."""
    engine = create_engine(database_url)
    metadata.create_all(engine)
    rows.metadata.create_all(engine)
    CALLS.clear()
    yield engine
    engine.dispose()


def seam_on(engine: Engine) -> EventSeam:
    """till and books on ``engine``, quick retries."""
    settings = EventSeamSettings(bus=BusSettings(backoff_initial=0.01, backoff_max=0.02))
    return EventSeam(settings, [till, books], session_factory=sessionmaker(engine))


def inbox_rows(engine: Engine) -> Counter[str]:
    """Inbox rows per handler."""
    with engine.connect() as connection:
        query = select(inbox_table.c.handler, func.count()).group_by(inbox_table.c.handler)
        return Counter(dict(connection.execute(query).all()))


def booked(engine: Engine) -> list[int]:
    """``n`` of every SaleBooked in the outbox, sorted."""
    with engine.connect() as connection:
        payloads = connection.execute(
            select(outbox.c.payload).where(outbox.c.type == "tests.inbox.SaleBooked")
        )
        return sorted(int(json.loads(payload)["n"]) for (payload,) in payloads)


async def deliver(seam: EventSeam, *events: SaleMade) -> None:
    """Publish ``events`` in one transaction, then wait until the bus handled them."""
    async with anyio.create_task_group() as group:
        await group.start(seam.run)
        with seam.transaction() as unit:
            unit.publish(*events)
        await seam.join()
        await seam.aclose()


async def test_each_handler_records_its_inbox_row_with_its_writes(engine: Engine) -> None:
    """Every handler kind (sync with a context, async, sync without) gets one inbox row per event, committed with its writes and follow-ups."""
    seam = seam_on(engine)
    await deliver(seam, SaleMade(aggregate_id="s", n=1), SaleMade(aggregate_id="s", n=2))
    assert inbox_rows(engine) == dict.fromkeys(HANDLERS, 2)
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(rows)).scalar_one() == 2
    assert booked(engine) == [-2, -1, 1, 2]


async def test_an_event_the_kafka_path_applied_is_skipped_by_the_bus(engine: Engine) -> None:
    """When the inbox already holds (handler, event) the bus does not call the handler, and nothing is written or published again."""
    event = SaleMade(aggregate_id="s", n=7, source="till")
    with engine.begin() as connection:
        for handler in HANDLERS:
            inbox.record(connection, handler, event.event_id, event.event_name, context="till")
    seam = seam_on(engine)
    await deliver(seam, event)
    assert not CALLS
    assert booked(engine) == []
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(rows)).scalar_one() == 0


async def test_a_failed_attempt_rolls_back_its_inbox_row_with_its_writes(engine: Engine) -> None:
    """A handler failing after it wrote rolls back its row, follow-up and inbox claim; the retry applies the event once."""
    seam = seam_on(engine)
    await deliver(seam, SaleMade(aggregate_id="s", n=3, fail_times=2))
    assert CALLS["book", 3] == 3
    assert inbox_rows(engine)["books.book_sale"] == 1
    with engine.connect() as connection:
        assert connection.execute(select(rows.c.n)).scalars().all() == [3]
    assert booked(engine) == [-3, 3]
