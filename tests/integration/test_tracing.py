"""Tracing in one process: publish stamps the active span; bus handlers run in CONSUMER spans.

A real EventSeam on SQLite with its bus in a SyncBridge portal (a sync web process), the SDK's
TracerProvider set globally with an in-memory exporter (tests.tracing_support).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import pytest
from opentelemetry import trace
from sqlalchemy import create_engine, select
from sqlalchemy.orm import sessionmaker

from engine.bridge import SyncBridge
from engine.codec import decode_headers
from engine.contexts import BoundedContext
from engine.events import DomainEvent
from engine.seam import EventSeam
from engine.settings import BusSettings, EventSeamSettings
from engine.tracing import ConsumerSpans, current_traceparent, traced_subscription, tracer
from engine.types import Subscription
from outbox.table import metadata, outbox
from tests.tracing_support import installed_provider, only, span_rows, traceparent_ids

if TYPE_CHECKING:
    from collections.abc import Iterator

    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from sqlalchemy import Engine

    from engine.handler_context import HandlerContext

OPENED = "tests.tracing.TicketOpened"
TRIAGED = "tests.tracing.TicketTriaged"


class TicketOpened(DomainEvent, name=OPENED, version=1):
    """A support ticket was opened at the desk."""

    subject: str


class TicketTriaged(DomainEvent, name=TRIAGED, version=1):
    """Triage looked at a ticket (the follow-up of triage_ticket_on_ticket_opened)."""


class TriageFailedError(RuntimeError):
    """Raised by the triage handler for a ticket whose subject is "fail"."""


def build_contexts() -> list[BoundedContext]:
    """desk publishes TicketOpened; triage handles it in a span of its own and follows up."""
    desk = BoundedContext("desk", owns=[TicketOpened])
    triage = BoundedContext("triage", owns=[TicketTriaged])

    @triage.handler(TicketOpened, name="triage_ticket_on_ticket_opened")
    def triage_ticket(event: TicketOpened, ctx: HandlerContext) -> None:
        with trace.get_tracer("tests.tracing").start_as_current_span("triage.assess"):
            if event.subject == "fail":
                raise TriageFailedError(event.subject)
            ctx.publish(TicketTriaged(aggregate_id=event.aggregate_id))

    @desk.handler(TicketTriaged, name="note_triage_on_ticket_triaged")
    async def note_triage(event: TicketTriaged) -> None:
        pass

    return [desk, triage]


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """The global SDK provider's in-memory exporter (installed before anything is built)."""
    with installed_provider() as exporter:
        yield exporter


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[Engine]:
    """A fresh SQLite database with the eventseam tables."""
    engine = create_engine(sqlite_url)
    metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def seam(exporter: InMemorySpanExporter, engine: Engine) -> Iterator[EventSeam]:
    """A running seam (every context local), built after the provider was installed."""
    bridge = SyncBridge(name="test-tracing-bridge")
    seam = EventSeam(
        EventSeamSettings(bus=BusSettings(max_attempts=1)),
        build_contexts(),
        session_factory=sessionmaker(engine),
        bridge=bridge,
    )
    seam.start_background()
    yield seam
    seam.stop()
    bridge.stop()


def open_ticket(seam: EventSeam, subject: str) -> str:
    """Publish a TicketOpened inside a "request" span; return that span's id (hex).

    Waits until the bus handled it, follow-ups included.
    """
    with trace.get_tracer("tests.web").start_as_current_span("request") as request:
        with seam.transaction() as unit:
            unit.publish(TicketOpened(aggregate_id="ticket-1", subject=subject))
        seam.bridge.call(seam.join)
    return f"{request.get_span_context().span_id:016x}"


def test_publish_stamps_the_active_span_on_the_outbox_row(seam: EventSeam, engine: Engine) -> None:
    """The outbox row's traceparent header names the span that was active at publish."""
    web = trace.get_tracer("tests.web")
    with web.start_as_current_span("request") as request, seam.transaction() as unit:
        unit.publish(TicketOpened(aggregate_id="ticket-1", subject="printer"))
    context = request.get_span_context()
    with engine.connect() as connection:
        blobs = connection.execute(
            select(outbox.c.headers).where(outbox.c.type == OPENED)
        ).scalars()
        (headers,) = [dict(decode_headers(blob)) for blob in blobs]
    assert traceparent_ids(headers["traceparent"]) == (
        f"{context.trace_id:032x}",
        f"{context.span_id:016x}",
    )
    assert current_traceparent() is None  # no span is active any more


def test_bus_handlers_run_in_consumer_spans_under_the_publishing_span(
    seam: EventSeam, exporter: InMemorySpanExporter
) -> None:
    """request -> process (bus) -> the handler's span -> its follow-up's process span: one trace."""
    request_id = open_ticket(seam, "printer")
    rows = span_rows(exporter.get_finished_spans())
    request = only(rows, name="request")
    process = only(rows, name=f"process {OPENED}")
    assess = only(rows, name="triage.assess")
    follow_up = only(rows, name=f"process {TRIAGED}")
    assert {row["trace_id"] for row in rows} == {request["trace_id"]}
    assert request["span_id"] == request_id
    assert process["parent_id"] == request_id
    assert process["links"] == [request_id]
    assert assess["parent_id"] == process["span_id"]
    assert follow_up["parent_id"] == assess["span_id"]
    assert process["kind"] == "CONSUMER"
    assert process["attributes"] == {
        "messaging.system": "eventseam",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.consumer.group.name": "triage.triage_ticket_on_ticket_opened",
        "eventseam.handler": "triage.triage_ticket_on_ticket_opened",
        "messaging.destination.name": OPENED,
        "messaging.message.id": process["attributes"]["messaging.message.id"],
    }
    assert process["status"] == "UNSET"


def test_a_failing_bus_handler_span_records_the_error(
    seam: EventSeam, exporter: InMemorySpanExporter
) -> None:
    """The handler's exception marks its process span ERROR with error.type and an exception event."""
    open_ticket(seam, "fail")
    (span,) = [s for s in exporter.get_finished_spans() if s.name == f"process {OPENED}"]
    assert span.status.status_code.name == "ERROR"
    assert span.attributes is not None
    assert span.attributes["error.type"] == f"{__name__}.TriageFailedError"
    assert [event.name for event in span.events] == ["exception"]
    assert len(seam.bus.dead_letters.list()) == 1


def test_tracing_is_off_without_a_tracer_provider() -> None:
    """No provider set: nothing is wrapped, no spans, no traceparent (the API's proxy is ignored)."""
    subscription = Subscription(name="x.y", event_types=(TicketOpened,), handle=_noop)
    with installed_provider():
        pass  # installs, then resets the globals: back to the API's proxy provider
    assert tracer() is None
    assert traced_subscription(subscription) is subscription
    assert ConsumerSpans.for_handler("x.y", "group") is None
    with trace.get_tracer("tests").start_as_current_span("ignored"):
        assert current_traceparent() is None  # a proxy span is not recording, has no ids


def test_tracing_is_off_without_the_otel_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """With opentelemetry not importable, tracer() and current_traceparent() are None, no error."""
    monkeypatch.setenv("OTEL_PYTHON_TRACER_PROVIDER", "sdk_tracer_provider")
    for name in [name for name in sys.modules if name.startswith("opentelemetry")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    assert tracer() is None
    assert current_traceparent() is None


async def _noop(event: DomainEvent) -> None:
    pass
