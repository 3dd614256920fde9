"""Bounded contexts of the test project: orders publish, audit records, billing goes to Kafka only."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from django.db import transaction
from sqlalchemy import text
from structlog.contextvars import get_contextvars

from engine.contexts import BoundedContext
from engine.events import DomainEvent
from engine.integrations.django import publish, uses_django_db

from .models import Order

if TYPE_CHECKING:
    from engine.handler_context import HandlerContext
    from engine.types import Handler


class OrderPlaced(DomainEvent, name="shop.OrderPlaced", version=1):
    """An order was placed."""

    number: str
    note: str = ""


class InvoiceIssued(DomainEvent, name="billing.InvoiceIssued", version=1):
    """An invoice was issued (billing's mode is ``broker``: never dispatched in process)."""

    number: str


class AuditRecorded(DomainEvent, name="audit.AuditRecorded", version=1):
    """The audit context stored an order it saw (a handler's follow-up event)."""

    number: str


class Received:
    """What the handlers received, in order (thread safe: handlers run in worker threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[DomainEvent] = []

    def add(self, event: DomainEvent) -> None:
        with self._lock:
            self._events.append(event)

    def numbers(self) -> list[str]:
        """The ``number`` of every received event, in arrival order."""
        with self._lock:
            return [str(getattr(event, "number", "?")) for event in self._events]

    def events(self) -> list[DomainEvent]:
        """A snapshot of the received events."""
        with self._lock:
            return list(self._events)

    def clear(self) -> None:
        with self._lock:
            self._events.clear()


RECEIVED = Received()

orders = BoundedContext("orders", owns=[OrderPlaced])
audit = BoundedContext("audit", owns=[AuditRecorded])
billing = BoundedContext("billing", owns=[InvoiceIssued])


@audit.handler(OrderPlaced, InvoiceIssued, AuditRecorded, name="record_order_placed")
def record_order_placed(event: DomainEvent) -> None:
    """Record every event it receives."""
    RECEIVED.add(event)


AUDIT_NOTE = "audit@"


@audit.handler(OrderPlaced, name="store_audit_copy_on_order_placed")
@uses_django_db
def store_audit_copy_on_order_placed(event: OrderPlaced) -> None:
    """For notes ``audit@<alias>``: store an ``<number>-audit`` order and publish AuditRecorded."""
    if not event.note.startswith(AUDIT_NOTE):
        return
    alias = event.note.removeprefix(AUDIT_NOTE)
    number = f"{event.number}-audit"
    with transaction.atomic(using=alias):
        Order.objects.using(alias).create(number=number)
        publish(
            event.caused(AuditRecorded(aggregate_id=event.aggregate_id, number=number)), using=alias
        )


SESSION_NOTE = "session"


@audit.handler(OrderPlaced, name="count_orders_with_session_on_order_placed")
def count_orders_with_session_on_order_placed(event: OrderPlaced, ctx: HandlerContext) -> None:
    """For note ``session``: count orders through ctx.session and publish the count as a follow-up."""
    if event.note != SESSION_NOTE:
        return
    count = ctx.session.execute(text("SELECT count(*) FROM shop_order")).scalar_one()
    ctx.publish(
        AuditRecorded(aggregate_id=event.aggregate_id, number=f"{event.number}-seen-{count}")
    )


#: (durable handler name, event type) of every call the ``seen`` middleware wrapped.
SEEN: list[tuple[str, str]] = []


def seen(handle: Handler) -> Handler:
    """A handler middleware (settings.EVENTSEAM['middlewares']): appends each call to SEEN."""

    async def wrapped(event: DomainEvent) -> None:
        SEEN.append((str(get_contextvars().get("handler")), event.event_name))
        await handle(event)

    return wrapped
