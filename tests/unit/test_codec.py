"""Codec: events to Kafka-shaped records (CloudEvents binary mode) and back."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from engine.codec import (
    DEFAULT_MAX_EVENT_BYTES,
    Headers,
    decode,
    decode_headers,
    encode,
    encode_headers,
)
from engine.errors import DecodeError, EventTooLargeError
from engine.events import DomainEvent
from engine.registry import EventRegistry

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class ParcelShipped(DomainEvent, name="shipping.ParcelShipped", version=2):
    parcel_id: str
    weight_grams: int
    label: str | None = None


@pytest.fixture
def registry() -> EventRegistry:
    """A registry holding ParcelShipped v2 and an upcaster from v1."""
    registry = EventRegistry()
    registry.register(ParcelShipped)

    @registry.upcaster("shipping.ParcelShipped", 1)
    def grams(data: dict[str, Any]) -> dict[str, Any]:
        return {"parcel_id": data["parcel_id"], "weight_grams": data["weight_kg"] * 1000}

    return registry


def shipped(**overrides: Any) -> ParcelShipped:
    values: dict[str, Any] = {
        "aggregate_id": "parcel-9",
        "parcel_id": "parcel-9",
        "weight_grams": 1200,
        "source": "shipping",
    }
    return ParcelShipped(**{**values, **overrides})


def header_map(headers: Headers) -> dict[str, bytes]:
    return dict(headers)


def test_round_trip_keeps_every_field(registry: EventRegistry) -> None:
    """encode then decode gives back an equal event, envelope included."""
    event = shipped(
        label="fragile ✓",
        correlation_id=uuid.uuid4(),
        causation_id=uuid.uuid4(),
        traceparent=TRACEPARENT,
    )
    record = encode(event)
    assert decode(registry, record.key, record.value, record.headers) == event


def test_record_layout(registry: EventRegistry) -> None:
    """Key is the aggregate id, value the data JSON, headers a list of CloudEvents attributes."""
    event = shipped(traceparent=TRACEPARENT)
    record = encode(event)
    assert record.key == b"parcel-9"
    assert json.loads(record.value) == {
        "parcel_id": "parcel-9",
        "weight_grams": 1200,
        "label": None,
    }
    assert type(record.headers) is list
    assert all(type(h) is tuple and isinstance(h[1], bytes) for h in record.headers)
    headers = header_map(record.headers)
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_id"] == str(event.event_id).encode()
    assert headers["ce_type"] == b"shipping.ParcelShipped"
    assert headers["ce_source"] == b"shipping"
    assert headers["ce_dataversion"] == b"2"
    assert headers["traceparent"] == TRACEPARENT.encode()
    assert "ce_correlationid" not in headers
    assert (record.event_type, record.version, record.context) == (
        "shipping.ParcelShipped",
        2,
        "shipping",
    )


def test_stored_headers_round_trip_as_a_list() -> None:
    """encode_headers / decode_headers preserve the headers and give back a list."""
    record = encode(shipped(traceparent=TRACEPARENT, correlation_id=uuid.uuid4()))
    restored = decode_headers(encode_headers(record.headers))
    assert type(restored) is list
    assert restored == record.headers


def test_decoding_from_stored_headers(registry: EventRegistry) -> None:
    """A record read back from the outbox's stored headers decodes to the same event."""
    event = shipped()
    record = encode(event)
    stored = decode_headers(encode_headers(record.headers))
    assert decode(registry, record.key, record.value, stored) == event


def test_older_version_is_upcast_on_decode(registry: EventRegistry) -> None:
    """A v1 record decodes into the registered v2 class through the upcaster."""
    record = encode(shipped())
    headers = [(k, b"1" if k == "ce_dataversion" else v) for k, v in record.headers]
    event = decode(registry, record.key, b'{"parcel_id":"parcel-9","weight_kg":3}', headers)
    assert isinstance(event, ParcelShipped)
    assert event.weight_grams == 3000


def test_size_guard_names_event_and_size() -> None:
    """An event over the limit raises EventTooLargeError with its type, id, size and limit."""
    event = shipped(label="x" * 2000)
    with pytest.raises(EventTooLargeError) as caught:
        encode(event, max_bytes=1024)
    error = caught.value
    assert error.event_type == "shipping.ParcelShipped"
    assert error.event_id == str(event.event_id)
    assert error.size == encode(event, max_bytes=DEFAULT_MAX_EVENT_BYTES).size
    assert error.size > error.limit == 1024
    assert "shipping.ParcelShipped" in str(error)
    assert str(error.size) in str(error)


def test_event_at_the_limit_passes() -> None:
    """An event of exactly max_bytes is accepted."""
    event = shipped()
    size = encode(event).size
    assert encode(event, max_bytes=size).size == size


def corrupt(headers: Headers, drop: str | None = None, **replace: bytes) -> Headers:
    return [(k, replace.get(k, v)) for k, v in headers if k != drop]


@pytest.mark.parametrize(
    ("reason", "mutate"),
    [
        ("bad-json", lambda r: (r.value[:-1], r.headers)),
        ("bad-json", lambda r: (b"[1, 2]", r.headers)),
        ("unknown-type", lambda r: (r.value, corrupt(r.headers, ce_type=b"shipping.Nope"))),
        ("unknown-version", lambda r: (r.value, corrupt(r.headers, ce_dataversion=b"7"))),
        ("missing-event-id", lambda r: (r.value, corrupt(r.headers, drop="ce_id"))),
        ("schema-mismatch", lambda r: (b'{"parcel_id":"p"}', r.headers)),
        ("schema-mismatch", lambda r: (r.value, corrupt(r.headers, ce_id=b"not-a-uuid"))),
    ],
)
def test_malformed_input_gives_decode_error_with_reason(
    registry: EventRegistry, reason: str, mutate: Any
) -> None:
    """Each kind of malformed record raises DecodeError tagged with its reason."""
    record = encode(shipped())
    value, headers = mutate(record)
    with pytest.raises(DecodeError) as caught:
        decode(registry, record.key, value, headers)
    assert caught.value.reason == reason


def test_missing_upcaster_is_unknown_version() -> None:
    """An older version with no upcaster path is reported as unknown-version."""
    registry = EventRegistry()
    registry.register(ParcelShipped)
    record = encode(shipped())
    headers = corrupt(record.headers, ce_dataversion=b"1")
    with pytest.raises(DecodeError) as caught:
        decode(registry, record.key, record.value, headers)
    assert caught.value.reason == "unknown-version"


def test_decode_ignores_fields_a_newer_producer_added(registry: EventRegistry) -> None:
    """Readers are open: an unknown field in the value is dropped, the event still decodes."""
    record = encode(shipped())
    value = json.dumps({**json.loads(record.value), "added_later": True}).encode()
    decoded = decode(registry, record.key, value, record.headers)
    assert decoded == shipped().model_copy(
        update={"event_id": decoded.event_id, "occurred_at": decoded.occurred_at}
    )
    assert "added_later" not in decoded.model_dump()
