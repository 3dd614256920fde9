"""Detached contexts: their handlers leave the monolith's in-memory bus."""

from __future__ import annotations

import pytest

from engine.contexts import BoundedContext
from engine.errors import SettingsError
from engine.events import DomainEvent
from engine.seam import EventSeam
from engine.settings import EventSeamSettings


class ParcelBooked(DomainEvent, name="tests.detach.ParcelBooked", version=1):
    parcel: str


def contexts() -> list[BoundedContext]:
    desk = BoundedContext("desk", owns=[ParcelBooked])
    courier = BoundedContext("courier")
    audit = BoundedContext("audit")

    @courier.handler(ParcelBooked, name="pick_up_on_parcel_booked")
    def pick_up(event: ParcelBooked) -> None: ...

    @audit.handler(ParcelBooked, name="log_on_parcel_booked")
    def log(event: ParcelBooked) -> None: ...

    return [desk, courier, audit]


def handler_names(seam: EventSeam) -> set[str]:
    return {subscription.name for subscription in seam.bus.subscriptions}


def test_detached_context_handlers_do_not_run_in_process() -> None:
    """With courier detached, only audit's handler is on the monolith's bus."""
    seam = EventSeam(EventSeamSettings(detached=["courier"]), contexts())
    assert handler_names(seam) == {"audit.log_on_parcel_booked"}


def test_every_context_runs_in_process_by_default() -> None:
    """Without detached contexts, every handler is on the bus."""
    seam = EventSeam(EventSeamSettings(), contexts())
    assert handler_names(seam) == {"audit.log_on_parcel_booked", "courier.pick_up_on_parcel_booked"}


def test_detaching_an_unknown_context_is_refused() -> None:
    """A typo in the detached list fails at construction and names the known contexts."""
    with pytest.raises(SettingsError, match=r"courir.*known contexts: desk, courier, audit"):
        EventSeam(EventSeamSettings(detached=["courir"]), contexts())
