"""The orders context object: the events it owns and those its handlers may subscribe to.

Handlers attach to it in handlers.py; subscribing to an undeclared event raises SubscriptionError.
"""

from __future__ import annotations

from contexts.payments.events import PaymentAuthorized, PaymentDeclined
from contexts.shipping.events import LabelCreated
from engine.contexts import BoundedContext

from .events import OrderCancelled, OrderPlaced

orders = BoundedContext(
    "orders",
    owns=[OrderPlaced, OrderCancelled],
    subscribes=[PaymentAuthorized, PaymentDeclined, LabelCreated],
)
