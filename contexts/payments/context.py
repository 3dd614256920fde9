"""The payments context object: the events it owns and those its handlers may subscribe to.

Handlers attach to it in handlers.py; subscribing to an undeclared event raises SubscriptionError.
"""

from __future__ import annotations

from contexts.orders.events import OrderCancelled, OrderPlaced
from engine.contexts import BoundedContext

from .events import PaymentAuthorized, PaymentDeclined, PaymentVoided

payments = BoundedContext(
    "payments",
    owns=[PaymentAuthorized, PaymentDeclined, PaymentVoided],
    subscribes=[OrderPlaced, OrderCancelled],
)
