"""DomainEvent: frozen, explicit wire name and version, envelope, JSON round trip."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from engine.errors import EventDefinitionError
from engine.events import ENVELOPE_FIELDS, DomainEvent, new_event_id


class OrderPlaced(DomainEvent, name="orders.OrderPlaced", version=2):
    order_id: str
    total_cents: int
    note: str | None = None


class OrderEvent(DomainEvent):
    """An abstract base: no wire name."""

    order_id: str


class OrderCancelled(OrderEvent, name="orders.OrderCancelled"):
    reason: str


def placed(**overrides: object) -> OrderPlaced:
    values: dict[str, object] = {
        "aggregate_id": "order-1",
        "order_id": "order-1",
        "total_cents": 1250,
    }
    return OrderPlaced(**{**values, **overrides})


def test_event_is_frozen() -> None:
    """Assigning to a field of a published fact fails."""
    event = placed()
    with pytest.raises(ValidationError, match="frozen"):
        event.total_cents = 1  # type: ignore[misc]


def test_wire_name_and_version_come_from_class_keywords() -> None:
    """The class keywords set the wire name and version; version defaults to 1."""
    assert (OrderPlaced.event_name, OrderPlaced.event_version) == ("orders.OrderPlaced", 2)
    assert OrderCancelled.event_name == "orders.OrderCancelled"
    assert OrderCancelled.event_version == 1
    assert placed().type_key == ("orders.OrderPlaced", 2)


def test_renaming_or_moving_the_class_keeps_the_wire_name() -> None:
    """The wire name does not depend on the class name or its module path."""

    class SomethingElseEntirely(DomainEvent, name="orders.OrderPlaced", version=2):
        order_id: str

    SomethingElseEntirely.__module__ = "somewhere.else"
    assert SomethingElseEntirely.event_name == OrderPlaced.event_name
    assert SomethingElseEntirely(aggregate_id="a", order_id="a").type_key == placed().type_key


def test_abstract_base_cannot_be_instantiated() -> None:
    """A subclass declared without a wire name is abstract and refuses instantiation."""
    assert OrderEvent.is_abstract()
    assert not OrderCancelled.is_abstract()
    with pytest.raises(EventDefinitionError, match="no wire name"):
        OrderEvent(aggregate_id="a", order_id="a")
    with pytest.raises(EventDefinitionError):
        DomainEvent(aggregate_id="a")


def test_concrete_subclass_of_abstract_base_inherits_its_fields() -> None:
    """A named subclass of an abstract base has the base's fields and its own."""
    event = OrderCancelled(aggregate_id="o-1", order_id="o-1", reason="changed mind")
    assert event.data() == {"order_id": "o-1", "reason": "changed mind"}


@pytest.mark.parametrize(
    ("name", "version"),
    [("", 1), ("  orders.X  ", 1), ("orders.Xed", 0), ("orders.Xed", True), ("orders.Xed", "1")],
)
def test_bad_name_or_version_is_rejected_at_class_creation(name: str, version: object) -> None:
    """An empty or padded name and a version that is not an integer >= 1 are refused."""
    with pytest.raises(EventDefinitionError):

        class Broken(DomainEvent, name=name, version=version):
            pass


def test_json_round_trip_is_exact() -> None:
    """An event survives model_dump_json / model_validate_json unchanged, envelope included."""
    event = placed(
        note="gift",
        correlation_id=uuid.uuid4(),
        causation_id=uuid.uuid4(),
        source="orders",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    assert OrderPlaced.model_validate_json(event.model_dump_json()) == event


def test_occurred_at_is_normalised_to_utc() -> None:
    """An aware timestamp in another zone is stored as the same instant in UTC."""
    local = datetime(2024, 3, 1, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    event = placed(occurred_at=local)
    assert event.occurred_at == local
    assert event.occurred_at.tzinfo is UTC
    assert event.occurred_at.hour == 10
    assert '"occurred_at":"2024-03-01T10:30:00Z"' in event.model_dump_json()


def test_naive_timestamp_is_rejected() -> None:
    """A timestamp without a time zone is ambiguous and refused."""
    with pytest.raises(ValidationError):
        placed(occurred_at=datetime(2024, 3, 1, 12, 30))


def test_envelope_defaults() -> None:
    """event_id is a fresh UUIDv7, occurred_at is now in UTC, the rest is unset."""
    before = datetime.now(UTC)
    first, second = placed(), placed()
    assert first.event_id.version == 7
    assert first.event_id != second.event_id
    assert before <= first.occurred_at <= datetime.now(UTC)
    assert first.correlation_id is None
    assert first.causation_id is None
    assert first.source is None
    assert first.traceparent is None
    assert new_event_id().version == 7


def test_data_excludes_the_envelope() -> None:
    """data() holds the event's own fields, JSON-ready, and no envelope field."""
    data = placed(source="orders").data()
    assert data == {"order_id": "order-1", "total_cents": 1250, "note": None}
    assert not ENVELOPE_FIELDS & data.keys()


def test_unknown_fields_are_refused_on_construction() -> None:
    """A writer's misspelt field is an error, never silently dropped (closed for writers)."""
    with pytest.raises(ValidationError, match="added_in_v3"):
        OrderPlaced.model_validate(
            {"aggregate_id": "a", "order_id": "a", "total_cents": 1, "added_in_v3": True}
        )


def test_caused_stamps_correlation_and_causation() -> None:
    """A follow-up carries the cause's id as causation and the root's id as correlation."""
    root = placed()
    child = root.caused(OrderCancelled(aggregate_id="o-1", order_id="o-1", reason="x"))
    grandchild = child.caused(placed(aggregate_id="o-2", order_id="o-2"))
    assert (child.causation_id, child.correlation_id) == (root.event_id, root.event_id)
    assert (grandchild.causation_id, grandchild.correlation_id) == (child.event_id, root.event_id)
