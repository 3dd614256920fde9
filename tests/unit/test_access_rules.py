"""Access rules per context: publish only what it owns, subscribe only to what it declares."""

from __future__ import annotations

import dataclasses

import pytest

from engine.contexts import BoundedContext, ContextMap
from engine.errors import OwnershipError, SubscriptionError
from engine.events import DomainEvent
from engine.handler_context import subscription_for
from engine.seam import EventSeam
from engine.settings import EventSeamSettings


class ParcelBooked(DomainEvent, name="access.ParcelBooked", version=1):
    """Owned by depot."""

    n: int


class ParcelLost(DomainEvent, name="access.ParcelLost", version=1):
    """Owned by depot, not declared by courier."""

    n: int


class CourierAssigned(DomainEvent, name="access.CourierAssigned", version=1):
    """Owned by courier."""

    n: int


def contexts() -> tuple[BoundedContext, BoundedContext]:
    """depot owns two events; courier owns one and declares it subscribes to ParcelBooked."""
    depot = BoundedContext("depot", owns=[ParcelBooked, ParcelLost])
    courier = BoundedContext("courier", owns=[CourierAssigned], subscribes=[ParcelBooked])
    return depot, courier


def test_a_handler_on_an_undeclared_event_is_refused_at_declaration() -> None:
    """Subscribing courier's handler to ParcelLost raises SubscriptionError naming the context, handler and event."""
    _, courier = contexts()
    with pytest.raises(SubscriptionError) as raised:

        @courier.handler(ParcelBooked, ParcelLost, name="assign_on_parcel_lost")
        def assign_on_parcel_lost(event: DomainEvent) -> None:
            """Never declared."""

    error = raised.value
    assert (error.context, error.handler, error.event_type) == (
        "courier",
        "courier.assign_on_parcel_lost",
        "access.ParcelLost",
    )
    assert "subscribes=[...]" in str(error)
    assert not courier.handlers


def test_a_declared_subscription_is_accepted() -> None:
    """A handler on a declared event type is registered as usual."""
    _, courier = contexts()

    @courier.handler(ParcelBooked, name="assign_on_parcel_booked")
    def assign_on_parcel_booked(event: ParcelBooked) -> None:
        """Declared."""

    assert [spec.name for spec in courier.handlers] == ["courier.assign_on_parcel_booked"]


def test_the_context_map_refuses_handlers_added_around_the_decorator() -> None:
    """A HandlerSpec appended to a context's handlers directly is checked when the ContextMap is built."""
    depot, courier = contexts()

    @courier.handler(ParcelBooked, name="assign_on_parcel_booked")
    def assign_on_parcel_booked(event: ParcelBooked) -> None:
        """Declared."""

    spec = courier.handlers[0]
    courier.handlers.append(
        dataclasses.replace(spec, name="courier.sneaky", event_types=(ParcelLost,))
    )
    with pytest.raises(SubscriptionError, match=r"courier\.sneaky"):
        ContextMap([depot, courier])


def test_without_a_declaration_the_handlers_are_the_declaration() -> None:
    """A context without subscribes=[...] may subscribe its handlers to any event type."""
    depot = BoundedContext("depot", owns=[ParcelBooked, ParcelLost])

    @depot.handler(CourierAssigned, name="note_on_courier_assigned")
    def note_on_courier_assigned(event: CourierAssigned) -> None:
        """Undeclared context: accepted."""

    assert depot.subscribed_types() == {CourierAssigned}


def test_publishing_another_contexts_event_names_both_contexts() -> None:
    """courier publishing depot's ParcelBooked is refused with OwnershipError naming courier and depot."""
    seam = EventSeam(EventSeamSettings(), contexts())
    with pytest.raises(OwnershipError) as raised:
        seam.prepare([ParcelBooked(aggregate_id="p-1", n=1)], context="courier")
    assert (raised.value.context, raised.value.owner) == ("courier", "depot")
    assert "context 'courier' cannot publish access.ParcelBooked: it is owned by 'depot'" in str(
        raised.value
    )


@pytest.mark.anyio
async def test_a_handler_publishes_for_its_own_context() -> None:
    """Inside a courier handler, publishing depot's event without context= is refused; courier's own event passes."""
    depot, courier = contexts()
    seam = EventSeam(EventSeamSettings(), [depot, courier])
    outcomes: list[str] = []

    @courier.handler(ParcelBooked, name="assign_on_parcel_booked")
    def assign_on_parcel_booked(event: ParcelBooked) -> None:
        """Tries both."""
        try:
            seam.prepare([ParcelLost(aggregate_id=event.aggregate_id, n=event.n)])
        except OwnershipError as exc:
            outcomes.append(f"refused {exc.context}->{exc.owner}")
        prepared = seam.prepare([CourierAssigned(aggregate_id=event.aggregate_id, n=event.n)])
        outcomes.append(f"published as {prepared.local[0].source if prepared.local else '-'}")

    await subscription_for(courier.handlers[0], seam).handle(ParcelBooked(aggregate_id="p", n=1))
    assert outcomes == ["refused courier->depot", "published as courier"]
    assert seam.prepare([ParcelLost(aggregate_id="p", n=2)]).local[0].source == "depot"
