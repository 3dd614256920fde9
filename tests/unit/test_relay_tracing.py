"""The relay's producer spans (outbox.tracing) over a fake publisher: parents, headers, batch ends.

The fake implements the relay's BatchPublisher protocol with batches of a fixed record count
(records keep their headers in the stored, wire form);
the real one is covered end to end in tests/broker/test_tracing_e2e.py.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from engine.codec import decode_headers, encode_headers
from engine.tracing import propagator
from outbox.errors import PublishError
from outbox.kafka import Delivery
from outbox.tracing import TracedPublisher, traced_publisher
from tests.tracing_support import installed_provider, only, span_rows, traceparent_ids

if TYPE_CHECKING:
    from collections.abc import Iterator

    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

pytestmark = pytest.mark.anyio

Headers = list[tuple[str, bytes]]


class FakeBatch:
    """Holds up to ``capacity`` records as (key, value, headers)."""

    __slots__ = ("capacity", "partition", "records", "topic")

    def __init__(self, topic: str, partition: int, capacity: int) -> None:
        self.topic, self.partition, self.capacity = topic, partition, capacity
        self.records: list[tuple[bytes | None, bytes, bytes]] = []

    def append(self, key: bytes, value: bytes, headers: bytes) -> bool:
        if len(self.records) >= self.capacity:
            return False
        self.records.append((key, value, headers))
        return True

    def __len__(self) -> int:
        return len(self.records)


class FakeDelivery(Delivery):
    """Answers at once: acknowledged, or the given error."""

    __slots__ = ("error",)

    def __init__(self, error: PublishError | None) -> None:
        self.error = error

    async def wait(self) -> None:
        if self.error is not None:
            raise self.error


class FakePublisher:
    """A BatchPublisher whose batches hold ``capacity`` records; ``fail`` makes deliveries fail."""

    max_record_bytes = 1_000_000
    connections = 1

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.sent: list[FakeBatch] = []
        self.fail: PublishError | None = None

    def record_size(self, key: bytes | None, value: bytes, headers: bytes) -> int:
        return len(value)

    def new_batch(self, topic: str, partition: int) -> FakeBatch:
        return FakeBatch(topic, partition, self.capacity)

    async def send(self, batch: Any) -> Delivery:
        assert isinstance(batch, FakeBatch)  # TracedPublisher hands on its inner batch
        self.sent.append(batch)
        return FakeDelivery(self.fail)


class StartCounter(SpanProcessor):
    """Counts started spans by name (an unfinished span is never exported, so count starts)."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started.append(span.name)


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """The global SDK provider's in-memory exporter."""
    with installed_provider() as exporter:
        yield exporter


def record_headers(event_id: uuid.UUID, traceparent: str | None) -> bytes:
    """Stored headers as the codec writes them (a subset), with a traceparent when given."""
    headers: Headers = [("ce_id", str(event_id).encode()), ("ce_type", b"tests.Happened")]
    if traceparent is not None:
        headers.append(("traceparent", traceparent.encode()))
    return encode_headers(headers)


def published_under(name: str) -> tuple[str, str]:
    """A finished "request" span's traceparent and span id (what the outbox row stores)."""
    with trace.get_tracer("tests").start_as_current_span(name) as span:
        carrier: dict[str, str] = {}
        propagator().inject(carrier)
    return carrier["traceparent"], f"{span.get_span_context().span_id:016x}"


def header(headers: bytes, name: str) -> bytes:
    return dict(decode_headers(headers))[name]


async def test_each_traced_record_gets_a_producer_span_named_in_its_header(
    exporter: InMemorySpanExporter,
) -> None:
    """A send span per traced record, child of its stored traceparent, ended at the ack; untraced records pass as they are."""
    fake = FakePublisher(capacity=10)
    publisher = traced_publisher(fake)
    assert isinstance(publisher, TracedPublisher)
    traceparent, request_id = published_under("request")
    traced_id, untraced_id = uuid.uuid4(), uuid.uuid4()
    batch = publisher.new_batch("orders", 2)
    assert batch.append(b"order-1", b"{}", record_headers(traced_id, traceparent))
    assert batch.append(b"order-2", b"{}", record_headers(untraced_id, None))
    delivery = await publisher.send(batch)
    assert [s.name for s in exporter.get_finished_spans()] == ["request"]  # not acked yet
    await delivery.wait()
    (sent,) = fake.sent
    send = only(span_rows(exporter.get_finished_spans()), name="send orders")
    assert send["parent_id"] == request_id
    assert send["kind"] == "PRODUCER"
    assert send["status"] == "UNSET"
    assert send["attributes"] == {
        "messaging.system": "kafka",
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.destination.name": "orders",
        "messaging.destination.partition.id": "2",
        "messaging.message.id": str(traced_id),
        "messaging.kafka.message.key": "order-1",
    }
    traced_headers, untraced_headers = sent.records[0][2], sent.records[1][2]
    assert traceparent_ids(header(traced_headers, "traceparent")) == (
        send["trace_id"],
        send["span_id"],
    )
    assert len(header(traced_headers, "traceparent")) == len(traceparent)
    assert untraced_headers == record_headers(untraced_id, None)


async def test_a_record_that_does_not_fit_keeps_its_span_for_the_next_batch(
    exporter: InMemorySpanExporter,
) -> None:
    """The span started for a record refused by a full batch is the one its next batch sends."""
    counter = StartCounter()
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(counter)
    fake = FakePublisher(capacity=1)
    publisher = traced_publisher(fake)
    traceparent, request_id = published_under("request")
    first_id, second_id = uuid.uuid4(), uuid.uuid4()
    full = publisher.new_batch("orders", 0)
    assert full.append(b"k", b"{}", record_headers(first_id, traceparent))
    assert not full.append(b"k", b"{}", record_headers(second_id, traceparent))
    await (await publisher.send(full)).wait()
    following = publisher.new_batch("orders", 0)
    assert following.append(b"k", b"{}", record_headers(second_id, traceparent))
    await (await publisher.send(following)).wait()
    sends = [row for row in span_rows(exporter.get_finished_spans()) if row["name"] != "request"]
    assert [row["attributes"]["messaging.message.id"] for row in sends] == [
        str(first_id),
        str(second_id),
    ]
    assert {row["parent_id"] for row in sends} == {request_id}
    second_header = header(fake.sent[1].records[0][2], "traceparent")
    assert traceparent_ids(second_header)[1] == sends[1]["span_id"]
    assert counter.started.count("send orders") == 2  # the refused record's span was reused


async def test_a_failed_batch_ends_its_spans_with_the_error(
    exporter: InMemorySpanExporter,
) -> None:
    """A batch the broker refuses ends its send spans with status ERROR, error.type and the exception."""
    fake = FakePublisher(capacity=5)
    fake.fail = PublishError("orders", "broker said no")
    publisher = traced_publisher(fake)
    traceparent, _ = published_under("request")
    batch = publisher.new_batch("orders", 0)
    assert batch.append(b"k", b"{}", record_headers(uuid.uuid4(), traceparent))
    with pytest.raises(PublishError):
        await (await publisher.send(batch)).wait()
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "send orders"]
    assert span.status.status_code.name == "ERROR"
    assert span.attributes is not None
    assert span.attributes["error.type"] == "outbox.errors.PublishError"
    assert [event.name for event in span.events] == ["exception"]


def test_without_a_tracer_provider_the_publisher_is_not_wrapped() -> None:
    """Tracing off: traced_publisher returns the publisher itself (the relay's hot path is unchanged)."""
    fake: Any = FakePublisher(capacity=1)
    assert traced_publisher(fake) is fake
