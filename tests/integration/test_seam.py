"""EventSeam with a sync host: outbox writes in the caller's transaction, dispatch after commit.

The bus runs inside a SyncBridge portal (as in a Django/Flask process) and the test thread plays
the request thread, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import Column, Engine, MetaData, String, Table, create_engine, insert, select
from sqlalchemy.orm import Session, sessionmaker

from engine.bridge import SyncBridge
from engine.contexts import BoundedContext
from engine.errors import EventTooLargeError, OwnershipError, SettingsError, UnknownContextError
from engine.events import DomainEvent
from engine.modes import Mode
from engine.seam import EventSeam
from engine.settings import BusSettings, EventSeamSettings
from outbox.errors import OutsideTransactionError
from outbox.table import Status, metadata, outbox

if TYPE_CHECKING:
    from collections.abc import Iterator

    from engine.handler_context import HandlerContext

# -- the example world ----------------------------------------------------------------------


class OrderPlaced(DomainEvent, name="orders.OrderPlaced"):
    order_id: str
    note: str = ""


class ParcelShipped(DomainEvent, name="shipping.ParcelShipped"):
    parcel_id: str


class InvoiceIssued(DomainEvent, name="billing.InvoiceIssued"):
    invoice_id: str


class NothingOwned(DomainEvent, name="nowhere.NothingOwnedHappened"):
    pass


business = MetaData()
parcels = Table("test_parcels", business, Column("id", String(64), primary_key=True))

FAIL_AFTER_PUBLISH = "fail-after-publish"


class Undo(Exception):
    """Raised by a test to roll its transaction or savepoint back (and suppressed around it)."""


@dataclass
class Received:
    """Events handlers received, by handler short name (thread safe)."""

    events: list[tuple[str, DomainEvent]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, handler: str, event: DomainEvent) -> None:
        with self.lock:
            self.events.append((handler, event))

    def of(self, handler: str) -> list[DomainEvent]:
        with self.lock:
            return [event for name, event in self.events if name == handler]


def build_contexts(received: Received) -> list[BoundedContext]:
    """orders publishes; shipping writes a parcel and publishes a follow-up; billing records."""
    orders = BoundedContext("orders", owns=[OrderPlaced])
    shipping = BoundedContext("shipping", owns=[ParcelShipped])
    billing = BoundedContext("billing", owns=[InvoiceIssued])

    @shipping.handler(OrderPlaced, name="ship_parcel_on_order_placed")
    def ship_parcel(event: OrderPlaced, ctx: HandlerContext) -> None:
        parcel_id = f"parcel-{event.order_id}"
        ctx.session.execute(insert(parcels).values(id=parcel_id))
        ctx.publish(ParcelShipped(aggregate_id=event.aggregate_id, parcel_id=parcel_id))
        if event.note == FAIL_AFTER_PUBLISH:
            raise RuntimeError("failed after writing and publishing")

    @billing.handler(OrderPlaced, name="record_order_placed")
    async def record_order(event: OrderPlaced) -> None:
        received.add("order", event)

    @billing.handler(ParcelShipped, name="record_parcel_shipped")
    def record_parcel(event: ParcelShipped) -> None:
        received.add("parcel", event)

    @shipping.handler(InvoiceIssued, name="record_invoice_issued")
    async def record_invoice(event: InvoiceIssued) -> None:
        received.add("invoice", event)

    return [orders, shipping, billing]


def make_settings(**values: Any) -> EventSeamSettings:
    """Settings for tests: one attempt per handler, so a failure dead-letters at once."""
    values.setdefault("bus", BusSettings(max_attempts=1))
    return EventSeamSettings(**values)


def order(n: int | str = 1, note: str = "") -> OrderPlaced:
    return OrderPlaced(aggregate_id=f"order-{n}", order_id=str(n), note=note)


def outbox_rows(engine: Engine, event_type: str | None = None) -> list[tuple[str, str, str]]:
    """(type, aggregatetype, status) of the outbox rows (of ``event_type``), in write order."""
    query = select(outbox.c.type, outbox.c.aggregatetype, outbox.c.status).order_by(outbox.c.seq)
    if event_type is not None:
        query = query.where(outbox.c.type == event_type)
    with engine.connect() as connection:
        return [(row.type, row.aggregatetype, row.status) for row in connection.execute(query)]


def parcel_ids(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(select(parcels.c.id)).scalars())


@dataclass
class World:
    """A running sync-host seam on a fresh database."""

    seam: EventSeam
    engine: Engine
    received: Received

    def join(self) -> None:
        """Wait (through the bridge) until the bus handled everything handed to it."""
        self.seam.bridge.call(self.seam.join)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a fresh database holding the outbox and the test's business table."""
    engine = create_engine(database_url)
    metadata.create_all(engine)
    business.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def bridge() -> Iterator[SyncBridge]:
    """A bridge of the test's own, stopped afterwards."""
    bridge = SyncBridge(name="test-seam-bridge")
    yield bridge
    bridge.stop()


@pytest.fixture
def world(engine: Engine, bridge: SyncBridge) -> Iterator[World]:
    """A seam whose bus runs in the bridge's portal, as in a sync web process."""
    received = Received()
    seam = EventSeam(
        make_settings(contexts={"billing": Mode.BROKER}),
        build_contexts(received),
        session_factory=sessionmaker(engine),
        bridge=bridge,
    )
    seam.start_background()
    yield World(seam, engine, received)
    seam.stop()


# -- construction ---------------------------------------------------------------------------


def test_owned_events_are_registered_at_construction() -> None:
    """Every event type a context owns is in the seam's registry."""
    seam = EventSeam(make_settings(), build_contexts(Received()))
    assert set(seam.registry.events()) == {OrderPlaced, ParcelShipped, InvoiceIssued}
    assert seam.contexts.names() == ["orders", "shipping", "billing"]


def test_settings_naming_an_unknown_context_fail_at_construction() -> None:
    """A mode configured for a context that does not exist is a SettingsError."""
    with pytest.raises(SettingsError, match="'shiping'") as caught:
        EventSeam(make_settings(contexts={"shiping": Mode.DUAL}), build_contexts(Received()))
    assert isinstance(caught.value.__cause__, UnknownContextError)


def test_mode_of_comes_from_settings() -> None:
    """mode_of reads the configured mode, LOCAL by default."""
    seam = EventSeam(make_settings(contexts={"billing": "dual"}), build_contexts(Received()))
    assert (seam.mode_of("billing"), seam.mode_of("orders")) == (Mode.DUAL, Mode.LOCAL)


def test_traceparent_is_kept_or_left_unset_without_an_active_span(world: World) -> None:
    """Without an active OpenTelemetry span no traceparent is stamped; a given one is kept."""
    given = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with world.seam.transaction() as uow:
        uow.publish(order(1), order(2).model_copy(update={"traceparent": given}))
    world.join()
    assert [e.traceparent for e in world.received.of("order")] == [None, given]


# -- publish and commit ---------------------------------------------------------------------


def test_committed_publish_writes_rows_and_dispatches_after_commit(world: World) -> None:
    """Rows are written in the transaction; handlers run only after it commits."""
    event = order()
    with world.seam.transaction() as uow:
        uow.publish(event)
        in_transaction = uow.session.execute(select(outbox.c.id)).scalars().all()
        world.join()
        assert world.received.of("order") == []
        assert in_transaction == [event.event_id]
    world.join()
    (delivered,) = world.received.of("order")
    assert delivered.event_id == event.event_id
    assert delivered.source == "orders"
    assert outbox_rows(world.engine, "orders.OrderPlaced") == [
        ("orders.OrderPlaced", "orders", Status.LOCAL)
    ]


def test_publish_on_the_callers_own_session(world: World) -> None:
    """publish joins a Session the host opened itself and waits for its commit."""
    with Session(world.engine) as session:
        with session.begin():
            world.seam.publish(session, order(1), order(2))
            world.join()
            assert world.received.of("order") == []
        world.join()
    assert [e.order_id for e in world.received.of("order")] == ["1", "2"]  # type: ignore[attr-defined]


def test_rollback_writes_nothing_and_dispatches_nothing(world: World) -> None:
    """A rolled-back transaction leaves no row and dispatches no event."""
    with suppress(Undo), world.seam.transaction() as uow:
        uow.publish(order())
        raise Undo
    world.join()
    assert outbox_rows(world.engine) == []
    assert world.received.events == []


def test_session_closed_without_commit_dispatches_nothing(world: World) -> None:
    """Closing a session whose transaction never committed dispatches nothing."""
    session = Session(world.engine)
    session.begin()
    world.seam.publish(session, order())
    session.close()
    world.join()
    assert world.received.events == []
    assert outbox_rows(world.engine) == []


def test_rolled_back_savepoint_drops_only_its_events(world: World) -> None:
    """Events published in a rolled-back SAVEPOINT vanish; the outer ones are kept."""
    with world.seam.transaction() as uow:
        uow.publish(order("outer"))
        with suppress(Undo), uow.session.begin_nested():
            uow.publish(order("inner"))
            with uow.session.begin_nested():
                uow.publish(order("innermost"))
            raise Undo
        uow.publish(order("after"))
    world.join()
    assert [e.order_id for e in world.received.of("order")] == ["outer", "after"]  # type: ignore[attr-defined]
    assert len(outbox_rows(world.engine, "orders.OrderPlaced")) == 2


def test_released_savepoint_keeps_its_events_for_the_outer_commit(world: World) -> None:
    """Events of a released SAVEPOINT are dispatched when the outer transaction commits."""
    with world.seam.transaction() as uow:
        uow.publish(order("outer"))
        with uow.session.begin_nested():
            uow.publish(order("inner"))
        world.join()
        assert world.received.events == []
    world.join()
    assert [e.order_id for e in world.received.of("order")] == ["outer", "inner"]  # type: ignore[attr-defined]


def test_released_savepoint_is_dropped_by_an_outer_rollback(world: World) -> None:
    """A released SAVEPOINT's events still vanish when the outer transaction rolls back."""
    with suppress(Undo), world.seam.transaction() as uow:
        uow.publish(order("outer"))
        with uow.session.begin_nested():
            uow.publish(order("inner"))
        raise Undo
    world.join()
    assert world.received.events == []


def test_connection_target_dispatches_after_commit(world: World) -> None:
    """publish on a Core Connection: commit dispatches, rollback and SAVEPOINT rollback drop."""
    with world.engine.begin() as connection:
        world.seam.publish(connection, order("kept"))
        with suppress(Undo), connection.begin_nested():
            world.seam.publish(connection, order("savepoint"))
            raise Undo
        with connection.begin_nested():
            world.seam.publish(connection, order("released"))
        world.join()
        assert world.received.events == []
    with suppress(Undo), world.engine.begin() as connection:
        world.seam.publish(connection, order("rolled-back"))
        raise Undo
    world.join()
    assert [e.order_id for e in world.received.of("order")] == ["kept", "released"]  # type: ignore[attr-defined]
    assert len(outbox_rows(world.engine, "orders.OrderPlaced")) == 2


# -- follow-ups from handlers ---------------------------------------------------------------


def test_handler_follow_up_commits_with_the_handlers_writes(world: World) -> None:
    """A handler's row and its follow-up event commit together; the follow-up is then dispatched."""
    event = order(7)
    with world.seam.transaction() as uow:
        uow.publish(event)
    world.join()
    world.join()  # Bus.join may return before a follow-up handed over meanwhile is handled
    assert parcel_ids(world.engine) == ["parcel-7"]
    (follow_up,) = world.received.of("parcel")
    assert isinstance(follow_up, ParcelShipped)
    assert (follow_up.causation_id, follow_up.correlation_id) == (event.event_id, event.event_id)
    assert follow_up.source == "shipping"
    assert [row[0] for row in outbox_rows(world.engine)] == [
        "orders.OrderPlaced",
        "shipping.ParcelShipped",
    ]


def test_failing_handler_rolls_back_its_writes_and_follow_ups(world: World) -> None:
    """When a handler raises after writing and publishing, neither its row nor its event stays."""
    with world.seam.transaction() as uow:
        uow.publish(order(8, note=FAIL_AFTER_PUBLISH))
    world.join()
    world.join()
    assert parcel_ids(world.engine) == []
    assert world.received.of("parcel") == []
    assert [row[0] for row in outbox_rows(world.engine)] == ["orders.OrderPlaced"]
    (letter,) = world.seam.bus.dead_letters.list()
    assert letter.handler == "shipping.ship_parcel_on_order_placed"


# -- refusals -------------------------------------------------------------------------------


def test_unowned_event_raises_and_writes_nothing(world: World) -> None:
    """An event no context owns raises OwnershipError, and the batch writes nothing."""
    with pytest.raises(OwnershipError, match="no context owns it"), world.seam.transaction() as uow:
        uow.publish(order(), NothingOwned(aggregate_id="x"))
    assert outbox_rows(world.engine) == []


def test_explicit_context_must_own_the_event(world: World) -> None:
    """context= names the publisher, which must own every event published."""
    with pytest.raises(OwnershipError) as caught, world.seam.transaction() as uow:
        uow.publish(order(), context="shipping")
    assert (caught.value.context, caught.value.owner) == ("shipping", "orders")
    with pytest.raises(UnknownContextError), world.seam.transaction() as uow:
        uow.publish(order(), context="marketing")
    with world.seam.transaction() as uow:
        uow.publish(order(), context="orders")
    assert len(outbox_rows(world.engine, "orders.OrderPlaced")) == 1


def test_oversize_event_raises_and_writes_nothing(world: World) -> None:
    """One event over the size limit fails the whole publish before anything is written."""
    huge = order("huge", note="x" * (world.seam.settings.max_event_bytes + 1))
    with pytest.raises(EventTooLargeError) as caught, world.seam.transaction() as uow:
        uow.publish(order("small"), huge)
    assert caught.value.event_id == str(huge.event_id)
    assert outbox_rows(world.engine) == []
    world.join()
    assert world.received.events == []


def test_publish_outside_a_transaction_is_refused(world: World) -> None:
    """A session without an open transaction is refused and nothing is held for dispatch."""
    with Session(world.engine) as session, pytest.raises(OutsideTransactionError):
        world.seam.publish(session, order())
    assert outbox_rows(world.engine) == []


# -- modes ----------------------------------------------------------------------------------


def test_broker_mode_is_written_pending_and_not_dispatched_locally(world: World) -> None:
    """A BROKER context's events wait in the outbox for the relay; LOCAL ones are dispatched."""
    with world.seam.transaction() as uow:
        uow.publish(InvoiceIssued(aggregate_id="inv-1", invoice_id="inv-1"), order())
    world.join()
    world.join()
    assert world.received.of("invoice") == []
    assert len(world.received.of("order")) == 1
    assert outbox_rows(world.engine) == [
        ("billing.InvoiceIssued", "billing", Status.PENDING),
        ("orders.OrderPlaced", "orders", Status.LOCAL),
        ("shipping.ParcelShipped", "shipping", Status.LOCAL),
    ]


# -- threads and lifecycle ------------------------------------------------------------------


def test_eight_threads_publishing_deliver_every_event_exactly_once(world: World) -> None:
    """Events published from 8 request threads at once are each dispatched exactly once."""
    per_thread = 25

    def request(thread: int) -> None:
        for n in range(per_thread):
            with world.seam.transaction() as uow:
                uow.publish(order(f"{thread}-{n}"))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(request, range(8)))
    world.join()
    world.join()
    ids = Counter(event.event_id for event in world.received.of("order"))
    assert len(ids) == 8 * per_thread
    assert set(ids.values()) == {1}
    assert len(world.received.of("parcel")) == 8 * per_thread
    assert world.seam.undelivered == []


def test_events_committed_before_the_bus_runs_are_kept_then_delivered(
    engine: Engine, bridge: SyncBridge
) -> None:
    """A commit while the bus is down never raises; the events wait and are delivered at start."""
    received = Received()
    seam = EventSeam(
        make_settings(),
        build_contexts(received),
        session_factory=sessionmaker(engine),
        bridge=bridge,
    )
    event = order()
    with seam.transaction() as uow:
        uow.publish(event)
    assert [e.event_id for e in seam.undelivered] == [event.event_id]
    seam.start_background()
    try:
        bridge.call(seam.join)
        assert [e.event_id for e in received.of("order")] == [event.event_id]
        assert seam.undelivered == []
    finally:
        seam.stop()
    assert not seam.running
