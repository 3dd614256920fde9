"""EventSeam with an async host: AsyncSession / AsyncConnection, the bus in the test's own loop."""

from __future__ import annotations

from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING

import anyio
import pytest
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import sessionmaker

from engine.errors import EventTooLargeError, OwnershipError
from engine.seam import EventSeam
from outbox.table import metadata, outbox
from tests.conftest import async_url
from tests.integration.test_seam import (
    FAIL_AFTER_PUBLISH,
    InvoiceIssued,
    NothingOwned,
    ParcelShipped,
    Received,
    Undo,
    build_contexts,
    business,
    make_settings,
    order,
    outbox_rows,
    parcel_ids,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from engine.contexts import BoundedContext
    from engine.handler_context import HandlerContext

pytestmark = pytest.mark.anyio


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A sync engine on a fresh database with the tables (handlers' sessions use it)."""
    engine = create_engine(database_url)
    metadata.create_all(engine)
    business.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
async def async_engine(database_url: str, engine: Engine) -> AsyncIterator[AsyncEngine]:
    """The async-driver engine on the same database."""
    async_engine = create_async_engine(async_url(database_url))
    yield async_engine
    await async_engine.dispose()


def with_invoicing(received: Received) -> list[BoundedContext]:
    """The test world plus an async billing handler that publishes a follow-up."""
    contexts = build_contexts(received)
    billing = contexts[2]

    @billing.handler(ParcelShipped, name="issue_invoice_on_parcel_shipped")
    async def issue_invoice(event: ParcelShipped, ctx: HandlerContext) -> None:
        ctx.publish(
            InvoiceIssued(aggregate_id=event.aggregate_id, invoice_id=f"inv-{event.parcel_id}")
        )

    return contexts


@pytest.fixture
def received() -> Received:
    """What the handlers received."""
    return Received()


@pytest.fixture
def seam(engine: Engine, received: Received) -> EventSeam:
    """A seam on the test database (not running yet)."""
    return EventSeam(
        make_settings(), with_invoicing(received), session_factory=sessionmaker(engine)
    )


@asynccontextmanager
async def running(seam: EventSeam) -> AsyncIterator[EventSeam]:
    """Run the seam's bus in the current loop for the block; close it afterwards."""
    async with anyio.create_task_group() as group:
        await group.start(seam.run)
        try:
            yield seam
        finally:
            await seam.aclose()


async def settle(seam: EventSeam, depth: int = 3) -> None:
    """Join once per level of follow-ups (a join may return before a later hand-over is handled)."""
    for _ in range(depth):
        await seam.join()


async def test_async_session_dispatches_after_commit(
    seam: EventSeam, async_engine: AsyncEngine, received: Received
) -> None:
    """Rows are written in the AsyncSession's transaction; handlers run only after commit."""
    event = order()
    async with running(seam), AsyncSession(async_engine) as session:
        async with session.begin():
            await seam.publish_async(session, event)
            assert (await session.execute(select(outbox.c.id))).scalars().all() == [event.event_id]
            await seam.join()
            assert received.events == []
        await seam.join()
        assert [e.event_id for e in received.of("order")] == [event.event_id]


async def test_async_session_rollback_dispatches_nothing(
    seam: EventSeam, async_engine: AsyncEngine, engine: Engine, received: Received
) -> None:
    """A rolled-back AsyncSession transaction leaves no row and dispatches nothing."""
    async with running(seam), AsyncSession(async_engine) as session:
        with suppress(Undo):
            async with session.begin():
                await seam.publish_async(session, order())
                raise Undo
        await seam.join()
    assert received.events == []
    assert outbox_rows(engine) == []


async def test_async_savepoint_rollback_drops_only_its_events(
    seam: EventSeam, async_engine: AsyncEngine, received: Received
) -> None:
    """In an AsyncSession, a rolled-back SAVEPOINT drops its events and keeps the outer ones."""
    async with running(seam), AsyncSession(async_engine) as session:
        async with session.begin():
            await seam.publish_async(session, order("outer"))
            with suppress(Undo):
                async with session.begin_nested():
                    await seam.publish_async(session, order("inner"))
                    raise Undo
            async with session.begin_nested():
                await seam.publish_async(session, order("released"))
        await seam.join()
    assert [e.order_id for e in received.of("order")] == ["outer", "released"]  # type: ignore[attr-defined]


async def test_async_connection_commit_and_rollback(
    seam: EventSeam, async_engine: AsyncEngine, engine: Engine, received: Received
) -> None:
    """On an AsyncConnection a commit dispatches and a rollback does not."""
    async with running(seam):
        async with async_engine.begin() as connection:
            await seam.publish_async(connection, order("committed"))
        with suppress(Undo):
            async with async_engine.begin() as connection:
                await seam.publish_async(connection, order("rolled-back"))
                raise Undo
        await seam.join()
    assert [e.order_id for e in received.of("order")] == ["committed"]  # type: ignore[attr-defined]
    assert len(outbox_rows(engine, "orders.OrderPlaced")) == 1


async def test_follow_up_chain_through_sync_and_async_handlers(
    seam: EventSeam, async_engine: AsyncEngine, engine: Engine, received: Received
) -> None:
    """A sync handler's and then an async handler's follow-ups are written, stamped and dispatched."""
    event = order(3)
    async with running(seam):
        async with AsyncSession(async_engine) as session, session.begin():
            await seam.publish_async(session, event)
        await settle(seam)
    (parcel,) = received.of("parcel")
    (invoice,) = received.of("invoice")
    assert parcel.causation_id == event.event_id
    assert (invoice.causation_id, invoice.correlation_id) == (parcel.event_id, event.event_id)
    assert invoice.source == "billing"
    assert parcel_ids(engine) == ["parcel-3"]
    assert [row[0] for row in outbox_rows(engine)] == [
        "orders.OrderPlaced",
        "shipping.ParcelShipped",
        "billing.InvoiceIssued",
    ]


async def test_failing_sync_handler_leaves_nothing_behind(
    seam: EventSeam, async_engine: AsyncEngine, engine: Engine, received: Received
) -> None:
    """A sync handler that fails after writing and publishing leaves no row and no follow-up."""
    async with running(seam):
        async with AsyncSession(async_engine) as session, session.begin():
            await seam.publish_async(session, order(4, note=FAIL_AFTER_PUBLISH))
        await settle(seam)
    assert parcel_ids(engine) == []
    assert received.of("parcel") == received.of("invoice") == []
    assert seam.bus.dead_letters.count() == 1


async def test_refused_publish_writes_nothing(
    seam: EventSeam, async_engine: AsyncEngine, engine: Engine
) -> None:
    """Unowned and oversize events fail publish_async before anything is written."""
    huge = order("huge", note="x" * (seam.settings.max_event_bytes + 1))
    async with AsyncSession(async_engine) as session:
        with pytest.raises(OwnershipError):
            async with session.begin():
                await seam.publish_async(session, order(), NothingOwned(aggregate_id="n"))
        with pytest.raises(EventTooLargeError):
            async with session.begin():
                await seam.publish_async(session, order(), huge)
    assert outbox_rows(engine) == []


async def test_commit_without_a_running_bus_keeps_events(
    seam: EventSeam, async_engine: AsyncEngine, received: Received
) -> None:
    """Committing while the bus is down does not raise; run() delivers the kept events."""
    event = order()
    async with AsyncSession(async_engine) as session, session.begin():
        await seam.publish_async(session, event)
    assert [e.event_id for e in seam.undelivered] == [event.event_id]
    async with running(seam):
        await seam.join()
    assert [e.event_id for e in received.of("order")] == [event.event_id]
    assert seam.undelivered == []
