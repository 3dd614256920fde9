"""The relay's producer spans (the ``otel`` extra): ``send <topic>``, one per traced event.

``traced_publisher(publisher)`` is what the relay's Dispatcher sends through. With tracing off
(engine.tracing.tracer() is None when the relay is built) it is ``publisher`` itself: the hot
path is untouched. With tracing on, each row whose stored headers carry a ``traceparent`` gets a
PRODUCER span parented by it (the span that published the event, e.g. the web request):

* started when the record is added to its producer batch, ended when the broker acknowledged
  the batch (status ERROR and ``error.type`` when the batch failed);
* its own context replaces the record's ``traceparent`` header (same length, so the size checks
  still hold), so the consumer's ``process`` span is its child. The outbox row keeps the
  publisher's traceparent: a row sent again after a failure gets a new span under the same parent;
* attributes: ``messaging.system`` kafka, ``messaging.operation.name``/``.type`` send,
  ``messaging.destination.name``, ``messaging.destination.partition.id``,
  ``messaging.message.id`` (the event id), ``messaging.kafka.message.key``.

One span per event (not one per batch with links) because the conventions' producer span of a
message is the one its consumer continues, and the relay's batches mix requests. Rows published
without an active span are sent as they are, without a span (the relay continues traces, it
does not start them). A record that does not fit the batch keeps its started span for the
lane's next batch; a batch never sent (leases lost) leaves its spans unfinished, which the SDK
never exports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from engine import tracing
from engine.codec import decode_headers, encode_headers

from .kafka import Delivery

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    from .lanes import Batch, BatchPublisher

Headers = list[tuple[str, bytes]]

#: Started spans kept for records that did not fit their batch (bounded: dropped beyond it).
CARRY_LIMIT: Final = 1024
#: Stored headers without these bytes carry no traceparent (the quick test before reading them).
_TRACEPARENT: Final = b"traceparent"


def traced_publisher(publisher: BatchPublisher) -> BatchPublisher:
    """``publisher`` with producer spans; ``publisher`` itself when tracing is off."""
    found = tracing.tracer()
    return publisher if found is None else TracedPublisher(publisher, found)


class TracedPublisher:
    """A BatchPublisher whose batches start a span per traced record (see the module docstring)."""

    def __init__(self, publisher: BatchPublisher, tracer: Tracer) -> None:
        from opentelemetry.trace import SpanKind

        self._publisher, self._tracer, self._kind = publisher, tracer, SpanKind.PRODUCER
        #: event id -> (span, headers) of records that did not fit their batch
        self._carried: dict[bytes, tuple[Span, Headers]] = {}

    @property
    def max_record_bytes(self) -> int:
        """The wrapped publisher's."""
        return self._publisher.max_record_bytes

    @property
    def connections(self) -> int:
        """The wrapped publisher's."""
        return self._publisher.connections

    def record_size(self, key: bytes | None, value: bytes, headers: bytes) -> int:
        """The wrapped publisher's."""
        return self._publisher.record_size(key, value, headers)

    def new_batch(self, topic: str, partition: int) -> Batch:
        """A batch of the wrapped publisher that starts a span per traced record."""
        return TracedBatch(self._publisher.new_batch(topic, partition), self)

    async def send(self, batch: Batch) -> Delivery:
        """Send through the wrapped publisher; the Delivery ends the batch's spans."""
        spans = batch.spans if isinstance(batch, TracedBatch) else []
        inner = batch.inner if isinstance(batch, TracedBatch) else batch
        try:
            delivery = await self._publisher.send(inner)
        except BaseException as exc:  # PublishError, cancellation: the spans end with it
            _end(spans, exc)
            raise
        return TracedDelivery(delivery, spans) if spans else delivery

    def start(
        self, topic: str, partition: int, key: bytes | None, headers: Headers
    ) -> tuple[Span, Headers] | None:
        """A started span for a record and its headers naming it; None for an untraced record."""
        traceparent = event_id = None
        for name, value in headers:
            if name == "traceparent":
                traceparent = value
            elif name == "ce_id":
                event_id = value
        if traceparent is None:
            return None
        carried = self._carried.pop(event_id, None) if event_id is not None else None
        if carried is not None:
            return carried
        attributes: tracing.Attributes = {
            tracing.MESSAGING_SYSTEM: tracing.KAFKA_SYSTEM,
            tracing.OPERATION_NAME: "send",
            tracing.OPERATION_TYPE: "send",
            tracing.DESTINATION_NAME: topic,
            tracing.PARTITION_ID: str(partition),
        }
        if event_id is not None:
            attributes[tracing.MESSAGE_ID] = event_id.decode("ascii", errors="replace")
        if key is not None:
            attributes[tracing.KAFKA_KEY] = key.decode("utf-8", errors="replace")
        span = self._tracer.start_span(
            f"send {topic}",
            context=tracing.parent_context(traceparent),
            kind=self._kind,
            attributes=attributes,
        )
        named = (tracing.traceparent_of(span) or "").encode()
        if named:
            headers = [(n, named) if n == "traceparent" else (n, v) for n, v in headers]
        return span, headers

    def carry(self, headers: Headers, started: tuple[Span, Headers]) -> None:
        """Keep a started span for the batch its record goes into next."""
        event_id = next((value for name, value in headers if name == "ce_id"), None)
        if event_id is None:
            return
        if len(self._carried) >= CARRY_LIMIT:
            self._carried.clear()
        self._carried[event_id] = started


class TracedBatch:
    """A Batch that starts a span per traced record; the records go into ``inner``."""

    __slots__ = ("_publisher", "inner", "partition", "spans", "topic")

    def __init__(self, inner: Batch, publisher: TracedPublisher) -> None:
        self.inner, self._publisher = inner, publisher
        self.topic, self.partition = inner.topic, inner.partition
        self.spans: list[Span] = []

    def append(self, key: bytes, value: bytes, headers: bytes) -> bool:
        """Add a record (its traceparent naming its new span); False when the batch is full."""
        if _TRACEPARENT not in headers:
            return self.inner.append(key, value, headers)
        listed = decode_headers(headers)
        started = self._publisher.start(self.topic, self.partition, key, listed)
        if started is None:
            return self.inner.append(key, value, headers)
        if self.inner.append(key, value, encode_headers(started[1])):
            self.spans.append(started[0])
            return True
        self._publisher.carry(listed, started)
        return False

    def __len__(self) -> int:
        return len(self.inner)


class TracedDelivery(Delivery):
    """A Delivery that ends its batch's spans with the broker's answer."""

    __slots__ = ("_delivery", "_spans")

    def __init__(self, delivery: Delivery, spans: list[Span]) -> None:
        # Delivery.__init__ is not called: the inner delivery holds the future.
        self._delivery, self._spans = delivery, spans

    async def wait(self) -> None:
        """The inner delivery's answer; the spans end with it."""
        try:
            await self._delivery.wait()
        except BaseException as exc:  # a failure, or cancelled before the broker answered
            _end(self._spans, exc)
            raise
        _end(self._spans, None)


def _end(spans: list[Span], error: BaseException | None) -> None:
    """End ``spans``: OK, or ERROR with the exception recorded and ``error.type``."""
    if error is not None and spans:
        from opentelemetry.trace import Status, StatusCode

        status = Status(StatusCode.ERROR, str(error))
        error_type = f"{type(error).__module__}.{type(error).__qualname__}"
        for span in spans:
            span.record_exception(error)
            span.set_attribute(tracing.ERROR_TYPE, error_type)
            span.set_status(status)
    for span in spans:
        span.end()
