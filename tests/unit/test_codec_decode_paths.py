"""Decode's fast path (headers read once, one validation) gives what the general path gives."""

from __future__ import annotations

from typing import Any

import pytest

from engine.codec import decode, encode
from engine.errors import DecodeError, EventDefinitionError
from engine.events import DomainEvent
from engine.registry import EventRegistry

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class ParcelWeighed(DomainEvent, name="tests.decodepaths.ParcelWeighed", version=1):
    grams: int
    note: str | None = None


@pytest.fixture
def registry() -> EventRegistry:
    registry = EventRegistry()
    registry.register(ParcelWeighed)
    return registry


def weighed(**overrides: Any) -> ParcelWeighed:
    values: dict[str, Any] = {"aggregate_id": "p-1", "grams": 1200, "source": "parcels"}
    return ParcelWeighed(**{**values, **overrides})


def test_header_values_of_other_buffer_types_read_like_bytes(registry: EventRegistry) -> None:
    """bytearray and memoryview header values (other clients) decode like bytes."""
    event = weighed(traceparent=TRACEPARENT)
    record = encode(event)
    for kind in (bytearray, memoryview):
        headers = tuple((name, kind(value)) for name, value in record.headers)
        assert decode(registry, record.key, record.value, headers) == event


def test_a_null_header_value_reads_as_absent(registry: EventRegistry) -> None:
    """A Kafka header with a null value counts as empty (an optional field stays None)."""
    event = weighed()
    record = encode(event)
    headers = [*record.headers, ("traceparent", None)]
    assert decode(registry, record.key, record.value, headers).traceparent is None


def test_the_last_of_repeated_headers_wins(registry: EventRegistry) -> None:
    """Two headers of one name: the later one is read (as before the fast path)."""
    event = weighed()
    record = encode(event)
    headers = [*record.headers, ("ce_source", b"elsewhere")]
    assert decode(registry, record.key, record.value, headers).source == "elsewhere"


def test_headers_override_envelope_fields_in_the_payload(registry: EventRegistry) -> None:
    """The envelope comes from the headers even when the payload carries the same names."""
    event = weighed()
    record = encode(event)
    value = b'{"grams": 5, "event_id": "00000000-0000-0000-0000-000000000000", "source": "x"}'
    decoded = decode(registry, record.key, value, record.headers)
    assert isinstance(decoded, ParcelWeighed)
    assert (decoded.event_id, decoded.source, decoded.grams) == (event.event_id, "parcels", 5)


def test_a_payload_that_is_not_utf8_is_bad_json(registry: EventRegistry) -> None:
    """Undecodable bytes are a DecodeError tagged bad-json, never another exception."""
    record = encode(weighed())
    with pytest.raises(DecodeError) as caught:
        decode(registry, record.key, b'{"grams": "\xff"}', record.headers)
    assert caught.value.reason == "bad-json"


def test_a_subclass_of_a_concrete_event_without_a_name_is_still_abstract() -> None:
    """Concrete events skip the per-instance hook; an unnamed subclass below one gets it back."""

    class Heavier(ParcelWeighed):
        pass

    with pytest.raises(EventDefinitionError):
        Heavier(aggregate_id="p-1", grams=1)


def test_a_concrete_events_own_post_init_hook_still_runs() -> None:
    """An event defining model_post_init keeps it."""
    seen: list[int] = []

    class Counted(DomainEvent, name="tests.decodepaths.Counted", version=1):
        n: int

        def model_post_init(self, context: Any, /) -> None:
            seen.append(self.n)

    Counted(aggregate_id="c", n=7)
    assert seen == [7]
