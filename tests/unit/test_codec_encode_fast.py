"""codec.encode's fast paths give exactly the bytes of the reference encoding.

The reference: the value is ``json`` (compact separators, ``ensure_ascii=False``) of
``event.data()``; the stored headers are ``encode_headers(headers)``, which is the headers
section of a Kafka v2 record as aiokafka's own varint encoder writes it; the size is
``EncodedEvent.size``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

import pytest
from pydantic import Field, PlainSerializer

from engine.codec import EncodedEvent, _serializes_like_json, encode, encode_headers
from engine.errors import EventTooLargeError
from engine.events import DomainEvent
from tests.unit.kafka_reference import kafka_headers_section

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Colour(enum.StrEnum):
    RED = "red"


class Line(DomainEvent, name="fast.Line", version=3):
    sku: str
    quantity: int
    price: Decimal
    colour: Colour
    tags: list[str] = Field(default_factory=list)
    at: datetime | None = None
    ref: uuid.UUID | None = None
    extra: dict[str, int] = Field(default_factory=dict)


class Measured(DomainEvent, name="fast.Measured", version=1):
    reading: float


class Custom(DomainEvent, name="fast.Custom", version=1):
    amount: Annotated[int, PlainSerializer(lambda v: v / 3, return_type=float)]


class Nested(DomainEvent, name="fast.Nested", version=1):
    points: list[tuple[str, float]]


def reference_value(event: DomainEvent) -> bytes:
    return json.dumps(event.data(), separators=(",", ":"), ensure_ascii=False).encode()


def check(record: EncodedEvent, event: DomainEvent) -> None:
    assert record.value == reference_value(event)
    assert record.stored_headers == encode_headers(record.headers)
    assert record.headers_blob() == encode_headers(record.headers)
    assert record.headers_blob() == kafka_headers_section(record.headers)
    assert (
        len(record.key) + len(record.value) + sum(len(k) + len(v) for k, v in record.headers)
        == record.size
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"aggregate_id": "commande-é-☃-😀", "source": "ventes-é"},
        {"aggregate_id": 'quote"back\\slash\x01\u2028', "source": 'a"b'},
        {
            "correlation_id": uuid.uuid4(),
            "causation_id": uuid.uuid4(),
            "traceparent": TRACEPARENT,
        },
        {"traceparent": 'weird-é"\\'},
        {"source": None},
    ],
)
def test_fast_encoding_matches_the_reference(overrides: dict[str, Any]) -> None:
    """Value, stored headers and size equal the reference for any envelope."""
    values: dict[str, Any] = {
        "aggregate_id": "order-1",
        "source": "sales",
        "sku": "SKU-é\u2028</script>",
        "quantity": 3,
        "price": Decimal("10.10"),
        "colour": Colour.RED,
        "tags": ["a", "é", "😀"],
        "at": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        "ref": uuid.uuid4(),
        "extra": {"é": 1},
    }
    event = Line(**{**values, **overrides})
    assert _serializes_like_json(Line)
    check(encode(event), event)


@pytest.mark.parametrize("reading", [float("nan"), float("inf"), 1e-07, 0.1, 1e20])
def test_floats_keep_the_reference_bytes(reading: float) -> None:
    """Classes with floats (NaN, Infinity, 1e-07 differ in pydantic-core) use json's bytes."""
    assert not _serializes_like_json(Measured)
    event = Measured(aggregate_id="m", source="lab", reading=reading)
    check(encode(event), event)


def test_custom_serializers_and_nested_floats_keep_the_reference_bytes() -> None:
    """A custom serializer or a float anywhere in the schema turns the fast value path off."""
    assert not _serializes_like_json(Custom)
    assert not _serializes_like_json(Nested)
    custom = Custom(aggregate_id="c", source="lab", amount=1)
    nested = Nested(aggregate_id="n", source="lab", points=[("a", 1e-07)])
    check(encode(custom), custom)
    check(encode(nested), nested)


def test_sealed_data_replaces_the_value() -> None:
    """``data=`` is encoded with json whatever the class."""
    event = Line(
        aggregate_id="o", source="s", sku="x", quantity=1, price=Decimal(1), colour=Colour.RED
    )
    record = encode(event, data={"sku": "sealed", "n": 1e-07})
    assert record.value == b'{"sku":"sealed","n":1e-07}'
    assert record.stored_headers == encode_headers(record.headers)


def test_size_guard_counts_every_header() -> None:
    """The size limit applies to key + value + headers, optional headers included."""
    event = Line(
        aggregate_id="o",
        source="s",
        sku="x",
        quantity=1,
        price=Decimal(1),
        colour=Colour.RED,
        traceparent=TRACEPARENT,
    )
    size = encode(event).size
    assert encode(event, max_bytes=size).size == size
    with pytest.raises(EventTooLargeError):
        encode(event, max_bytes=size - 1)


def test_a_copy_with_other_headers_stores_those_headers() -> None:
    """``dataclasses.replace(record, headers=...)`` drops the encoder's blob: no stale headers."""
    event = Measured(aggregate_id="m-1", source="lab", reading=1.0)
    record = encode(event)
    changed = dataclasses.replace(record, headers=[("ce_id", b"other")])
    assert changed.stored_headers is None
    assert changed.headers_blob() == encode_headers([("ce_id", b"other")])
    assert record.headers_blob() == encode_headers(record.headers)
