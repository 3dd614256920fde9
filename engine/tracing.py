"""OpenTelemetry tracing (the ``otel`` extra): one trace from the publishing request to every handler.

    request span (the host's, e.g. opentelemetry-instrumentation-flask)
      └─ send <topic>       PRODUCER  the relay, one span per event (outbox.tracing)
           └─ process <topic>  CONSUMER  the consumer runner, one span per handler call
                └─ the handler's own spans, its follow-up events' trace context
    request span
      └─ process <event type>  CONSUMER  the in-memory bus, one span per handler call

Contract:

* Publish: ``current_traceparent()`` (W3C ``traceparent`` of the active span, through the API's
  TraceContextTextMapPropagator) is stamped on each event (EventSeam.prepare); the codec stores
  it in the outbox row's headers and sends it as the record's ``traceparent`` header.
* Spans follow the OpenTelemetry messaging semantic conventions: ``messaging.system`` (``kafka``,
  or ``eventseam`` for the in-memory bus), ``messaging.operation.name``/``.type``,
  ``messaging.destination.name``, ``messaging.message.id`` (the event id),
  ``messaging.consumer.group.name``, plus ``eventseam.handler``. A failing handler's span records
  the exception, status ERROR and ``error.type``. A processing span's parent is the event's trace
  context (the producer span, or the publishing span on the bus), also added as a link; an event
  without one gets a root span.
* Tracing is on when a real TracerProvider is set globally (``trace.set_tracer_provider``) when
  the component is built: EventSeam (bus handlers), Relay, ConsumerRunner. It is checked once
  there, never per event, so configure OpenTelemetry before building them. Off (no provider, no
  SDK, or the extra not installed) the components are exactly the untraced ones: nothing is
  wrapped, nothing is imported (a process that never imported ``opentelemetry.trace`` has no
  provider and no active span, so not even the API is imported).
* Every handler call has its own span: a retried event has one per attempt (``eventseam.attempt``
  on the Kafka path), and on the Kafka path a batch that rolled back runs its events again one
  by one, so a span with status OK may belong to a rolled-back batch attempt.
* Cost with the SDK (BatchSpanProcessor), measured here: about 35-40 us of CPU per span.
"""

from __future__ import annotations

import functools
import os
import sys
from contextlib import contextmanager
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from contextlib import AbstractContextManager

    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    from opentelemetry.util.types import AttributeValue

    from .consumer import Record
    from .events import DomainEvent
    from .types import Handler, Subscription

#: Instrumentation scope of every eventseam span.
SCOPE: Final = "eventseam"

# Messaging semantic-convention attribute names (opentelemetry-semantic-conventions spells them
# the same; string constants keep that package out of the runtime dependencies).
MESSAGING_SYSTEM: Final = "messaging.system"
OPERATION_NAME: Final = "messaging.operation.name"
OPERATION_TYPE: Final = "messaging.operation.type"
DESTINATION_NAME: Final = "messaging.destination.name"
PARTITION_ID: Final = "messaging.destination.partition.id"
MESSAGE_ID: Final = "messaging.message.id"
CONSUMER_GROUP: Final = "messaging.consumer.group.name"
KAFKA_KEY: Final = "messaging.kafka.message.key"
KAFKA_OFFSET: Final = "messaging.kafka.offset"
ERROR_TYPE: Final = "error.type"
HANDLER: Final = "eventseam.handler"
ATTEMPT: Final = "eventseam.attempt"

#: ``messaging.system`` of the in-memory bus (a custom value, as the conventions allow).
BUS_SYSTEM: Final = "eventseam"
KAFKA_SYSTEM: Final = "kafka"

Attributes = dict[str, "AttributeValue"]


def _imported() -> bool:
    """True when ``opentelemetry.trace`` may hold a provider or an active span."""
    return (
        sys.modules.get("opentelemetry.trace") is not None
        or "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
    )


def tracer() -> Tracer | None:
    """eventseam's tracer from the global TracerProvider; None when tracing is off.

    Off: the ``otel`` extra is missing, no provider was set (the API's proxy), or the provider
    hands out no-op tracers (``OTEL_SDK_DISABLED``). Call it when building a component.
    """
    if not _imported():
        return None
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    found = provider.get_tracer(SCOPE, _version())
    return None if isinstance(found, trace.NoOpTracer) else found


def _version() -> str | None:
    try:
        return version("eventseam")
    except PackageNotFoundError:
        return None


@functools.cache
def propagator() -> TraceContextTextMapPropagator:
    """The W3C Trace Context propagator (``traceparent`` is W3C whatever OTEL_PROPAGATORS says)."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


def current_traceparent() -> str | None:
    """The W3C traceparent of the active span; None without one (or without OpenTelemetry)."""
    if sys.modules.get("opentelemetry.trace") is None:
        return None  # no span can be active in a process that never imported the API
    carrier: dict[str, str] = {}
    propagator().inject(carrier)
    return carrier.get("traceparent")


def parent_context(traceparent: str | bytes | None) -> Context:
    """The context a span continuing ``traceparent`` starts in; an empty one (a root) without it."""
    from opentelemetry.context import Context

    if not traceparent:
        return Context()
    if isinstance(traceparent, bytes):
        traceparent = traceparent.decode("ascii", errors="replace")
    return propagator().extract({"traceparent": traceparent}, context=Context())


def traceparent_of(span: Span) -> str | None:
    """The W3C traceparent naming ``span`` (injected into a record so its consumer is a child)."""
    from opentelemetry import trace

    carrier: dict[str, str] = {}
    propagator().inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent")


@contextmanager
def processing(
    tracer: Tracer, name: str, traceparent: str | None, attributes: Mapping[str, AttributeValue]
) -> Iterator[Span]:
    """A current CONSUMER span ``name`` continuing ``traceparent`` (also linked); see the module doc."""
    from opentelemetry.trace import Link, SpanKind, get_current_span

    parent = parent_context(traceparent)
    creation = get_current_span(parent).get_span_context()
    links = [Link(creation)] if creation.is_valid else None
    with tracer.start_as_current_span(
        name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes, links=links
    ) as span:
        try:
            yield span
        except Exception as exc:
            span.set_attribute(ERROR_TYPE, f"{type(exc).__module__}.{type(exc).__qualname__}")
            raise


# -- the in-memory bus ----------------------------------------------------------------------------


def traced_subscription(subscription: Subscription) -> Subscription:
    """``subscription`` with a ``process <event type>`` CONSUMER span around each handler call.

    Returns ``subscription`` itself when tracing is off (no cost on the bus's hot path).
    """
    found = tracer()
    if found is None:
        return subscription
    return replace(
        subscription, handle=_traced_handle(found, subscription.name, subscription.handle)
    )


def _traced_handle(tracer: Tracer, name: str, handle: Handler) -> Handler:
    common: Attributes = {
        MESSAGING_SYSTEM: BUS_SYSTEM,
        OPERATION_NAME: "process",
        OPERATION_TYPE: "process",
        CONSUMER_GROUP: name,
        HANDLER: name,
    }

    async def traced(event: DomainEvent) -> None:
        attributes = {
            **common,
            DESTINATION_NAME: event.event_name,
            MESSAGE_ID: str(event.event_id),
        }
        with processing(tracer, f"process {event.event_name}", event.traceparent, attributes):
            await handle(event)

    return traced


# -- the consumer runner --------------------------------------------------------------------------


class ConsumerSpans:
    """``process <topic>`` CONSUMER spans of one runner handler (engine.inbox_apply)."""

    __slots__ = ("_common", "_tracer")

    def __init__(self, tracer: Tracer, handler: str, group: str | None) -> None:
        self._tracer = tracer
        self._common: Attributes = {
            MESSAGING_SYSTEM: KAFKA_SYSTEM,
            OPERATION_NAME: "process",
            OPERATION_TYPE: "process",
            HANDLER: handler,
        }
        if group is not None:
            self._common[CONSUMER_GROUP] = group

    @classmethod
    def for_handler(cls, handler: str, group: str | None) -> ConsumerSpans | None:
        """Spans for ``handler`` in consumer group ``group``; None when tracing is off."""
        found = tracer()
        return None if found is None else cls(found, handler, group)

    def processing(
        self, event: DomainEvent, record: Record | None, attempt: int
    ) -> AbstractContextManager[Span]:
        """The current span of one handler call for ``event`` (fetched as ``record``)."""
        attributes: Attributes = {
            **self._common,
            MESSAGE_ID: str(event.event_id),
            KAFKA_KEY: event.aggregate_id,
            ATTEMPT: attempt,
        }
        destination = event.event_name
        if record is not None:
            destination = record.topic
            attributes[PARTITION_ID] = str(record.partition)
            attributes[KAFKA_OFFSET] = record.offset
        attributes[DESTINATION_NAME] = destination
        return processing(self._tracer, f"process {destination}", event.traceparent, attributes)
