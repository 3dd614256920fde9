"""EventRegistry: registration rules, name checks, resolution and upcasting."""

from __future__ import annotations

from typing import Any

import pytest

from engine.errors import (
    DuplicateEventError,
    EventDefinitionError,
    EventNameError,
    UnknownEventError,
    UpcastError,
)
from engine.events import DomainEvent
from engine.registry import EventNameWarning, EventRegistry


class PaymentAuthorized(DomainEvent, name="payments.PaymentAuthorized", version=1):
    amount: int


class PaymentAuthorizedV3(DomainEvent, name="payments.PaymentAuthorized", version=3):
    amount_cents: int
    currency: str


class ImpostorAuthorized(DomainEvent, name="payments.PaymentAuthorized", version=1):
    amount: int


class ChargeCard(DomainEvent, name="payments.ChargeCard"):
    amount: int


class AbstractPaymentEvent(DomainEvent):
    amount: int


def test_register_and_resolve() -> None:
    """A registered class resolves by (name, version) and is the latest of its name."""
    registry = EventRegistry()
    assert registry.register(PaymentAuthorized) is PaymentAuthorized
    assert registry.resolve("payments.PaymentAuthorized", 1) is PaymentAuthorized
    assert registry.latest("payments.PaymentAuthorized") is PaymentAuthorized
    assert PaymentAuthorized in registry
    assert len(registry) == 1


def test_latest_is_the_highest_version() -> None:
    """With several versions registered, latest returns the highest one."""
    registry = EventRegistry()
    registry.register_all([PaymentAuthorizedV3, PaymentAuthorized])
    assert registry.latest("payments.PaymentAuthorized") is PaymentAuthorizedV3
    assert registry.events() == [PaymentAuthorizedV3, PaymentAuthorized]


def test_registering_the_same_class_twice_is_a_no_op() -> None:
    """Registering a class again changes nothing."""
    registry = EventRegistry()
    registry.register(PaymentAuthorized)
    registry.register(PaymentAuthorized)
    assert len(registry) == 1


def test_duplicate_name_and_version_is_rejected_with_both_classes_named() -> None:
    """Another class claiming a taken (name, version) fails and the message names both classes."""
    registry = EventRegistry()
    registry.register(PaymentAuthorized)
    with pytest.raises(DuplicateEventError) as caught:
        registry.register(ImpostorAuthorized)
    assert (caught.value.name, caught.value.version) == ("payments.PaymentAuthorized", 1)
    message = str(caught.value)
    assert "PaymentAuthorized" in message
    assert "ImpostorAuthorized" in message
    assert registry.resolve("payments.PaymentAuthorized", 1) is PaymentAuthorized


def test_command_like_name_warns_by_default() -> None:
    """A name that reads as a command is registered with an EventNameWarning."""
    registry = EventRegistry()
    with pytest.warns(EventNameWarning, match="payments.ChargeCard"):
        registry.register(ChargeCard)
    assert ChargeCard in registry


def test_command_like_name_is_an_error_in_strict_mode() -> None:
    """Strict mode refuses a command-like name and registers nothing."""
    registry = EventRegistry(strict=True)
    with pytest.raises(EventNameError) as caught:
        registry.register(ChargeCard)
    assert caught.value.name == "payments.ChargeCard"
    assert ChargeCard not in registry


def test_past_tense_name_passes_strict_mode() -> None:
    """Strict mode accepts past-tense names without a warning."""
    registry = EventRegistry(strict=True)
    registry.register(PaymentAuthorized)
    assert PaymentAuthorized in registry


def test_abstract_or_foreign_classes_cannot_be_registered() -> None:
    """Only concrete DomainEvent subclasses can be registered."""
    registry = EventRegistry()
    with pytest.raises(EventDefinitionError):
        registry.register(AbstractPaymentEvent)
    with pytest.raises(EventDefinitionError):
        registry.register(dict)  # type: ignore[type-var]


def test_unknown_name_or_version() -> None:
    """Resolving an unregistered name or version raises UnknownEventError with both attributes."""
    registry = EventRegistry()
    registry.register(PaymentAuthorized)
    with pytest.raises(UnknownEventError) as caught:
        registry.resolve("payments.Nope", 1)
    assert (caught.value.name, caught.value.version) == ("payments.Nope", 1)
    with pytest.raises(UnknownEventError):
        registry.resolve("payments.PaymentAuthorized", 2)
    with pytest.raises(UnknownEventError):
        registry.latest("payments.Nope")
    with pytest.raises(UnknownEventError):
        registry.upcast("payments.Nope", 1, {})


def v3_registry() -> EventRegistry:
    """A registry holding only v3, with upcasters v1 -> v2 -> v3."""
    registry = EventRegistry()
    registry.register(PaymentAuthorizedV3)

    @registry.upcaster("payments.PaymentAuthorized", 1)
    def cents(data: dict[str, Any]) -> dict[str, Any]:
        return {"amount_cents": data["amount"] * 100}

    @registry.upcaster("payments.PaymentAuthorized", 2)
    def currency(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "currency": "EUR"}

    return registry


def test_upcasting_chain_v1_to_v3() -> None:
    """Version 1 data is upcast step by step to the registered version 3."""
    event_class, data = v3_registry().upcast("payments.PaymentAuthorized", 1, {"amount": 7})
    assert event_class is PaymentAuthorizedV3
    assert data == {"amount_cents": 700, "currency": "EUR"}


def test_upcasting_from_an_intermediate_version() -> None:
    """Version 2 data takes only the last step."""
    event_class, data = v3_registry().upcast("payments.PaymentAuthorized", 2, {"amount_cents": 5})
    assert event_class is PaymentAuthorizedV3
    assert data == {"amount_cents": 5, "currency": "EUR"}


def test_registered_version_is_returned_as_is() -> None:
    """Data of a registered version is not touched."""
    event_class, data = v3_registry().upcast(
        "payments.PaymentAuthorized", 3, {"amount_cents": 5, "currency": "USD"}
    )
    assert event_class is PaymentAuthorizedV3
    assert data == {"amount_cents": 5, "currency": "USD"}


def test_missing_upcaster_is_an_error() -> None:
    """A gap in the chain raises UpcastError naming the missing step."""
    registry = EventRegistry()
    registry.register(PaymentAuthorizedV3)
    with pytest.raises(UpcastError, match="no upcaster from version 1 to 2") as caught:
        registry.upcast("payments.PaymentAuthorized", 1, {"amount": 1})
    assert (caught.value.name, caught.value.version) == ("payments.PaymentAuthorized", 1)


def test_version_newer_than_registered_is_unknown() -> None:
    """A version above the latest registered one cannot be read."""
    with pytest.raises(UnknownEventError):
        v3_registry().upcast("payments.PaymentAuthorized", 4, {})


def test_failing_upcaster_is_reported() -> None:
    """An upcaster that raises surfaces as UpcastError chained to the cause."""
    with pytest.raises(UpcastError, match="upcaster from version 1 failed") as caught:
        v3_registry().upcast("payments.PaymentAuthorized", 1, {"wrong": 1})
    assert isinstance(caught.value.__cause__, KeyError)


def test_upcaster_registered_twice_is_rejected() -> None:
    """Two upcasters for one step are refused."""
    registry = v3_registry()
    with pytest.raises(UpcastError, match="already registered"):

        @registry.upcaster("payments.PaymentAuthorized", 1)
        def again(data: dict[str, Any]) -> dict[str, Any]:
            return data
