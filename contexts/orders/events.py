"""Events published by the orders context: its published language, importable by any context.

Every event's ``aggregate_id`` is the order id. Amounts are integer cents.
"""

from __future__ import annotations

from pydantic import Field

from engine.events import DomainEvent


class OrderPlaced(DomainEvent, name="orders.OrderPlaced", version=1):
    """A customer placed an order; it now waits for payment."""

    order_id: str
    customer_id: str
    total_cents: int = Field(gt=0)
    currency: str = "EUR"


class OrderCancelled(DomainEvent, name="orders.OrderCancelled", version=1):
    """The customer cancelled an order before it shipped; payment and shipment must be undone."""

    order_id: str
    reason: str
