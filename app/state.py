"""What the demo reads back: the events in the outbox, and each order's state in each context.

These are the application's read side: ``app`` may read every context's tables (contexts may
not read each other's).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select

from app.scenarios import Outcome
from contexts.orders.service import list_orders
from contexts.payments.service import list_payments
from contexts.shipping.service import list_labels
from outbox.table import outbox

if TYPE_CHECKING:
    import uuid

    from engine.seam import EventSeam


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as the outbox recorded it: write order, id, wire name, publishing context."""

    seq: int
    event_id: uuid.UUID
    event_type: str
    context: str
    order_id: str


@dataclass(frozen=True, slots=True)
class OrderState:
    """One order as the three contexts see it."""

    order_id: str
    customer_id: str
    total_cents: int
    outcome: Outcome


def read_events(seam: EventSeam, after_seq: int = 0) -> list[RecordedEvent]:
    """Outbox rows written after ``after_seq``, in write order."""
    query = select(
        outbox.c.seq, outbox.c.id, outbox.c.type, outbox.c.aggregatetype, outbox.c.payload
    )
    with seam.transaction() as uow:
        rows = uow.session.execute(
            query.where(outbox.c.seq > after_seq).order_by(outbox.c.seq)
        ).all()
    return [
        RecordedEvent(
            row.seq,
            row.id,
            row.type,
            row.aggregatetype,
            str(json.loads(row.payload).get("order_id", "?")),
        )
        for row in rows
    ]


def read_states(seam: EventSeam) -> dict[str, OrderState]:
    """Every order's status in orders, payments and shipping, by order id."""
    with seam.transaction() as uow:
        payments = {p.order_id: p.status.value for p in list_payments(uow.session)}
        labels = {label.order_id: label.status.value for label in list_labels(uow.session)}
        return {
            order.id: OrderState(
                order.id,
                order.customer_id,
                order.total_cents,
                Outcome(order.status.value, payments.get(order.id, "-"), labels.get(order.id, "-")),
            )
            for order in list_orders(uow.session)
        }
