"""The application of the end-to-end tracing test: a Flask desk and a detached triage worker.

``desk`` owns TicketOpened, published by the web app's ``POST /tickets``; ``triage`` handles it
in a worker subprocess (``eventseam worker --context triage``, loading ``worker_app``), opens a
span of its own and publishes TicketTriaged. Both contexts are in broker mode; the web app runs
triage detached, so only the worker handles it.

``worker_app`` installs an SDK TracerProvider with an in-memory exporter before it builds the
EventSeam, and writes the finished spans (tests.tracing_support.span_rows) as JSON to
``TRACING_TEST_SPANS`` when the process exits.
"""

from __future__ import annotations

import atexit
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from engine.contexts import BoundedContext
from engine.events import DomainEvent
from engine.integrations.flask import FlaskEventSeam, transaction
from engine.modes import Mode
from engine.seam import EventSeam
from engine.settings import (
    ConsumerSettings,
    EventSeamSettings,
    KafkaSettings,
    RelaySettings,
    TopicSettings,
)
from tests.tracing_support import span_rows

if TYPE_CHECKING:
    from flask.typing import ResponseReturnValue

    from engine.handler_context import HandlerContext

HANDLER = "triage.triage_ticket_on_ticket_opened"
#: Name of the span the triage handler opens.
ASSESS = "triage.assess"


class TicketOpened(DomainEvent, name="tests.tracing_e2e.TicketOpened", version=1):
    """A support ticket was opened at the desk (the web request)."""

    subject: str


class TicketTriaged(DomainEvent, name="tests.tracing_e2e.TicketTriaged", version=1):
    """Triage assessed a ticket (the worker's follow-up)."""


desk = BoundedContext("desk", owns=[TicketOpened])
triage = BoundedContext("triage", owns=[TicketTriaged])
CONTEXTS = (desk, triage)


@triage.handler(TicketOpened, name="triage_ticket_on_ticket_opened")
def triage_ticket_on_ticket_opened(event: TicketOpened, ctx: HandlerContext) -> None:
    """Assess the ticket in a span of its own and publish TicketTriaged from inside it."""
    with trace.get_tracer("tests.triage").start_as_current_span(ASSESS):
        ctx.publish(TicketTriaged(aggregate_id=event.aggregate_id))


def settings(database_url: str, bootstrap: str, prefix: str) -> EventSeamSettings:
    """Settings of the worker and of the relay: own topics, quick polling and consumer groups."""
    return EventSeamSettings(
        database_url=database_url,
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap, enable_idempotence="off", request_timeout_ms=5000
        ),
        relay=RelaySettings(topic_prefix=prefix, poll_interval=0.05, lease_seconds=2.0),
        consumer=ConsumerSettings(
            group_prefix=f"{prefix}g.",
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            fetch_max_wait_ms=20,
        ),
        contexts={"desk": Mode.BROKER, "triage": Mode.BROKER},
        topics={"desk": TopicSettings(partitions=1), "triage": TopicSettings(partitions=1)},
    )


# -- the web app (test process) -------------------------------------------------------------------

db = SQLAlchemy()


class Ticket(db.Model):  # type: ignore[name-defined,misc]  # Flask-SQLAlchemy's dynamic base
    """A support ticket (the desk's business row)."""

    __tablename__ = "tracing_tickets"
    id = db.Column(db.String(64), primary_key=True)
    subject = db.Column(db.String(200), nullable=False)


def web_app(database_url: str, bootstrap: str, prefix: str) -> Flask:
    """The desk's Flask app: ``POST /tickets`` publishes TicketOpened; triage runs detached."""
    app = Flask("tracing_desk")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_url,
        EVENTSEAM_KAFKA={"bootstrap_servers": bootstrap, "enable_idempotence": "off"},
        EVENTSEAM_RELAY={"topic_prefix": prefix},
        EVENTSEAM_CONTEXTS={"desk": "broker", "triage": "broker"},
        EVENTSEAM_DETACHED=["triage"],
    )
    db.init_app(app)
    FlaskEventSeam(app, db, contexts=CONTEXTS)
    app.add_url_rule("/tickets", "open_ticket", open_ticket, methods=["POST"])
    with app.app_context():
        db.create_all()
    return app


def open_ticket() -> ResponseReturnValue:
    """Open a ticket: TicketOpened in the request's transaction; 201 with its event id."""
    event = TicketOpened(aggregate_id="ticket-1", subject="printer on fire")
    with transaction() as tx:
        tx.session.add(Ticket(id=event.aggregate_id, subject=event.subject))
        tx.publish(event)
    return {"event_id": str(event.event_id)}, 201


# -- the worker (subprocess) ----------------------------------------------------------------------


def worker_app() -> EventSeam:
    """Application factory of the worker subprocess (TRACING_TEST_* environment variables)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # before the EventSeam and its runner are built
    atexit.register(_write_spans, exporter, Path(os.environ["TRACING_TEST_SPANS"]))
    database_url = os.environ["TRACING_TEST_DATABASE"]
    return EventSeam(
        settings(
            database_url, os.environ["TRACING_TEST_BOOTSTRAP"], os.environ["TRACING_TEST_PREFIX"]
        ),
        CONTEXTS,
        session_factory=sessionmaker(create_engine(database_url)),
    )


def _write_spans(exporter: InMemorySpanExporter, path: Path) -> None:
    rows: list[dict[str, Any]] = span_rows(exporter.get_finished_spans())
    path.write_text(json.dumps(rows, indent=1))
