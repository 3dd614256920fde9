"""The test app's world: Flask-SQLAlchemy models, events, bounded contexts and their handlers.

``orders`` publishes OrderPlaced; ``billing`` issues an invoice for each (its own transaction,
through ``HandlerContext.session`` on Flask-SQLAlchemy's engine) and publishes InvoiceIssued;
``audit`` records every event it hears in RECEIVED.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from engine.contexts import BoundedContext
from engine.events import DomainEvent

if TYPE_CHECKING:
    from engine.handler_context import HandlerContext


class Base(DeclarativeBase):
    """Declarative base of the test app's models."""


db = SQLAlchemy(model_class=Base)


class Order(db.Model):  # type: ignore[name-defined,misc]  # Flask-SQLAlchemy's dynamic base
    """An order the views write."""

    __tablename__ = "shop_order"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    note: Mapped[str] = mapped_column(String(80), default="")


class Invoice(db.Model):  # type: ignore[name-defined,misc]  # Flask-SQLAlchemy's dynamic base
    """An invoice the billing handler writes in its own transaction."""

    __tablename__ = "shop_invoice"

    order_id: Mapped[str] = mapped_column(String(40), primary_key=True)


class OrderPlaced(DomainEvent, name="flaskshop.OrderPlaced", version=1):
    """An order was placed."""

    order_id: str


class InvoiceIssued(DomainEvent, name="flaskshop.InvoiceIssued", version=1):
    """An invoice was issued for an order."""

    order_id: str


class Received:
    """Events the audit handler heard, in arrival order (thread safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[DomainEvent] = []

    def add(self, event: DomainEvent) -> None:
        with self._lock:
            self._events.append(event)

    def clear(self) -> None:
        with self._lock:
            self._events.clear()

    def names(self) -> list[str]:
        """Event names and order ids heard, as ``name:order`` strings, in arrival order."""
        with self._lock:
            return [f"{e.event_name}:{getattr(e, 'order_id', '?')}" for e in self._events]


RECEIVED = Received()

orders = BoundedContext("orders", owns=[OrderPlaced])
billing = BoundedContext("billing", owns=[InvoiceIssued])
audit = BoundedContext("audit")


@billing.handler(OrderPlaced, name="issue_invoice_on_order_placed")
def issue_invoice_on_order_placed(event: OrderPlaced, ctx: HandlerContext) -> None:
    """Write the order's invoice and publish InvoiceIssued in the handler's transaction."""
    ctx.session.add(Invoice(order_id=event.order_id))
    ctx.publish(InvoiceIssued(aggregate_id=event.aggregate_id, order_id=event.order_id))


@audit.handler(OrderPlaced, InvoiceIssued, name="record_on_shop_event")
def record_on_shop_event(event: DomainEvent) -> None:
    """Remember the event."""
    RECEIVED.add(event)


CONTEXTS = (orders, billing, audit)
