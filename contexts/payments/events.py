"""Events published by the payments context: its published language, importable by any context.

Every event's ``aggregate_id`` is the payment id; ``order_id`` says which order it settles.
Amounts are integer cents.
"""

from __future__ import annotations

from engine.events import DomainEvent


class PaymentAuthorized(DomainEvent, name="payments.PaymentAuthorized", version=1):
    """The customer's card was authorized for the order's total; the order can ship."""

    payment_id: str
    order_id: str
    amount_cents: int
    currency: str = "EUR"


class PaymentDeclined(DomainEvent, name="payments.PaymentDeclined", version=1):
    """The card was declined; ``reason`` is ``over_limit`` or ``card_declined``."""

    payment_id: str
    order_id: str
    amount_cents: int
    reason: str


class PaymentVoided(DomainEvent, name="payments.PaymentVoided", version=1):
    """An authorization was released because its order was cancelled; no money moves."""

    payment_id: str
    order_id: str
    amount_cents: int
