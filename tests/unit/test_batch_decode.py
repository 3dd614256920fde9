"""BatchDecoder: one validation per event class and batch, record by record what codec.decode gives."""

from __future__ import annotations

import gc
import json
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest

from engine.batch_decode import RETRY_AFTER, BatchDecoder
from engine.codec import decode, encode
from engine.errors import DecodeError
from engine.events import DomainEvent
from engine.registry import EventRegistry
from outbox.process_tuning import collector_paused
from tests.unit.fake_records import FakeRecord

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class CrateLoaded(DomainEvent, name="batch.CrateLoaded", version=2):
    crate: str
    kilos: int
    note: str | None = None


class DockOpened(DomainEvent, name="batch.DockOpened", version=1):
    """An event without data fields (its value is ``{}``)."""


class GateClosed(DomainEvent, name="batch.GateClosed", version=1):
    gate: int


@pytest.fixture
def registry() -> EventRegistry:
    """CrateLoaded v2 (with an upcaster from v1), DockOpened and GateClosed."""
    registry = EventRegistry()
    registry.register_all([CrateLoaded, DockOpened, GateClosed])

    @registry.upcaster("batch.CrateLoaded", 1)
    def tonnes(data: dict[str, Any]) -> dict[str, Any]:
        return {"crate": data["crate"], "kilos": data["tonnes"] * 1000}

    return registry


def crate(n: int, **overrides: Any) -> CrateLoaded:
    return CrateLoaded(aggregate_id=f"c{n}", crate=f"c{n}", kilos=n, source="yard", **overrides)


def records(*events: DomainEvent) -> list[FakeRecord]:
    """``events`` encoded as consecutive records of partition 0."""
    result = []
    for offset, event in enumerate(events):
        encoded = encode(event)
        result.append(
            FakeRecord("t", 0, offset, encoded.key, encoded.value, tuple(encoded.headers))
        )
    return result


def with_header(record: FakeRecord, name: str, value: bytes | None) -> FakeRecord:
    """``record`` with header ``name`` set to ``value`` (removed when None)."""
    headers = [(k, v) for k, v in record.headers if k != name]
    if value is not None:
        headers.append((name, value))
    return replace(record, headers=tuple(headers))


def one_by_one(registry: EventRegistry, batch: Sequence[FakeRecord]) -> list[DomainEvent | str]:
    """What codec.decode gives for each record: the event, or the DecodeError's reason."""
    result: list[DomainEvent | str] = []
    for record in batch:
        try:
            result.append(decode(registry, record.key, record.value, record.headers))
        except DecodeError as exc:
            result.append(exc.reason)
    return result


def outcomes(decoded: Sequence[DomainEvent | DecodeError | None]) -> list[Any]:
    return [item.reason if isinstance(item, DecodeError) else item for item in decoded]


def test_a_clean_batch_decodes_like_codec_decode(registry: EventRegistry) -> None:
    """Every envelope field survives the splice: ids, time, source, trace context, no-data events."""
    cause = uuid.uuid4()
    batch = records(
        crate(1),
        crate(2, correlation_id=cause, causation_id=cause, traceparent=TRACEPARENT),
        DockOpened(aggregate_id="dock-1", source="yard"),
        GateClosed(aggregate_id="g", gate=3, source="gates"),
        crate(3, note='quoted "note" \\ with a backslash and ünïcode'),
    )
    decoded = BatchDecoder(registry).decode(batch)
    assert decoded == one_by_one(registry, batch)
    assert decoded[0] == crate(1).model_copy(
        update={"event_id": decoded[0].event_id, "occurred_at": decoded[0].occurred_at}  # type: ignore[union-attr]
    )


def test_a_bad_record_in_the_middle_gets_its_own_reason(registry: EventRegistry) -> None:
    """The batch call fails, so each record is decoded alone: the bad one gets its precise
    reason, its neighbours decode exactly as codec.decode does."""
    batch = records(crate(1), crate(2), crate(3), crate(4))
    batch[1] = replace(batch[1], value=b'{"crate":"c2","kilos":"not a number"}')
    batch[2] = with_header(batch[2], "ce_id", b"not-a-uuid")
    decoded = BatchDecoder(registry).decode(batch)
    assert outcomes(decoded) == one_by_one(registry, batch)
    assert outcomes(decoded)[1:3] == ["schema-mismatch", "schema-mismatch"]
    assert [event.kilos for event in decoded if isinstance(event, CrateLoaded)] == [1, 4]


@pytest.mark.parametrize(
    ("reason", "mutate"),
    [
        ("bad-json", lambda r: replace(r, value=r.value[:-2] + b"}")),
        ("bad-json", lambda r: replace(r, value=b"[1, 2]")),
        ("bad-json", lambda r: replace(r, value=None)),
        ("unknown-type", lambda r: with_header(r, "ce_type", b"batch.Nope")),
        ("unknown-version", lambda r: with_header(r, "ce_dataversion", b"7")),
        ("missing-event-id", lambda r: with_header(r, "ce_id", None)),
        ("missing-header", lambda r: with_header(r, "ce_type", None)),
        ("bad-header", lambda r: with_header(r, "ce_dataversion", b"two")),
        ("bad-header", lambda r: with_header(r, "ce_source", b"\xff\xfe")),
        ("bad-header", lambda r: replace(r, key=b"\xff")),
    ],
)
def test_malformed_records_keep_codec_reasons(
    registry: EventRegistry, reason: str, mutate: Any
) -> None:
    """Each kind of malformed record, between good ones, gets codec.decode's reason."""
    batch = records(crate(1), crate(2), crate(3))
    batch[1] = mutate(batch[1])
    decoded = BatchDecoder(registry).decode(batch)
    assert outcomes(decoded) == one_by_one(registry, batch)
    assert outcomes(decoded)[1] == reason


def test_header_values_needing_escapes_are_not_spliced(registry: EventRegistry) -> None:
    """A quote or backslash in a key or header never becomes JSON structure: such a record is
    decoded on its own and keeps the text as it is."""
    batch = records(crate(1), crate(2), crate(3))
    batch[0] = replace(batch[0], key=b'c1","note":"injected')
    batch[1] = with_header(batch[1], "traceparent", b'x","crate":"overwritten')
    batch[2] = with_header(batch[2], "ce_source", b"back\\slash")
    decoded = BatchDecoder(registry).decode(batch)
    assert decoded == one_by_one(registry, batch)
    first, second, third = decoded
    assert isinstance(first, CrateLoaded)
    assert first.note is None
    assert first.aggregate_id == 'c1","note":"injected'
    assert isinstance(second, CrateLoaded)
    assert second.crate == "c2"
    assert second.traceparent == 'x","crate":"overwritten'
    assert isinstance(third, CrateLoaded)
    assert third.source == "back\\slash"


def test_envelope_headers_override_the_same_names_in_the_value(registry: EventRegistry) -> None:
    """An envelope name inside the value loses to its header, as in codec.decode."""
    batch = records(crate(1))
    data = {**json.loads(batch[0].value or b"{}"), "source": "from-value"}
    batch[0] = replace(batch[0], value=json.dumps(data).encode())
    decoded = BatchDecoder(registry).decode(batch)
    assert decoded == one_by_one(registry, batch)
    assert isinstance(decoded[0], CrateLoaded)
    assert decoded[0].source == "yard"


def test_upcast_and_unknown_fields_decode_record_by_record(registry: EventRegistry) -> None:
    """A v1 record is upcast and a newer producer's extra field is dropped, as codec.decode does;
    after a failed batch call the class is decoded record by record for RETRY_AFTER batches."""
    batch = records(crate(1), crate(2), crate(3))
    v1 = {"crate": "c2", "tonnes": 2}
    batch[1] = with_header(replace(batch[1], value=json.dumps(v1).encode()), "ce_dataversion", b"1")
    newer = {**json.loads(batch[2].value or b"{}"), "added_later": True}
    batch[2] = replace(batch[2], value=json.dumps(newer).encode())
    decoder = BatchDecoder(registry)
    decoded = decoder.decode(batch)
    assert decoded == one_by_one(registry, batch)
    assert [e.kilos for e in decoded if isinstance(e, CrateLoaded)] == [1, 2000, 3]
    calls: list[int] = []
    plan = decoder._plans[(b"batch.CrateLoaded", b"2")]
    assert plan.adapter is not None
    validate = plan.adapter.validate_json

    def counted(data: bytes) -> list[DomainEvent]:
        calls.append(1)
        return validate(data)

    plan.adapter.validate_json = counted  # type: ignore[method-assign,assignment]
    clean = records(crate(4), crate(5))
    for _ in range(RETRY_AFTER):
        assert decoder.decode(clean) == one_by_one(registry, clean)
    assert calls == []  # decoded record by record meanwhile
    assert decoder.decode(clean) == one_by_one(registry, clean)
    assert calls == [1]  # then spliced again


def test_skipped_types_give_none(registry: EventRegistry) -> None:
    """Records whose ce_type is in ``skip`` are neither decoded nor reported malformed."""
    batch = records(crate(1), GateClosed(aggregate_id="g", gate=1, source="gates"), crate(2))
    batch[1] = replace(batch[1], value=b"not json at all")
    decoded = BatchDecoder(registry, skip=frozenset({"batch.GateClosed"})).decode(batch)
    assert decoded[1] is None
    assert [type(event) for event in decoded] == [CrateLoaded, type(None), CrateLoaded]


def test_headers_that_are_not_pairs_of_bytes_are_normalized(registry: EventRegistry) -> None:
    """Header lists and memoryview or null values decode as codec.decode normalizes them."""
    batch = records(crate(1), crate(2), crate(3))
    batch[0] = replace(batch[0], headers=[(k, memoryview(v)) for k, v in batch[0].headers])
    batch[1] = with_header(batch[1], "ce_causationid", None)
    batch[1] = replace(batch[1], headers=(*batch[1].headers, ("ce_causationid", None)))
    batch[2] = replace(batch[2], headers=42)
    decoded = BatchDecoder(registry).decode(batch)
    assert outcomes(decoded) == one_by_one(registry, batch)
    assert isinstance(decoded[0], CrateLoaded)
    assert isinstance(decoded[1], CrateLoaded)
    assert isinstance(decoded[2], DecodeError)
    assert decoded[2].reason == "bad-header"


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


@pytest.mark.usefixtures("collector_on")
def test_collector_is_paused_inside_and_restored_after() -> None:
    """collector_paused turns automatic collection off inside and back on after, errors too."""
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError, match="boom"), collector_paused():
        raise ValueError("boom")
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_on")
def test_collector_left_off_when_it_was_off() -> None:
    """A collector the process turned off stays off after collector_paused."""
    gc.disable()
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()
