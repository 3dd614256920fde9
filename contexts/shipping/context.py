"""The shipping context object: the events it owns and those its handlers may subscribe to.

Handlers attach to it in handlers.py; subscribing to an undeclared event raises SubscriptionError.
"""

from __future__ import annotations

from contexts.orders.events import OrderCancelled
from contexts.payments.events import PaymentAuthorized
from engine.contexts import BoundedContext

from .events import LabelCreated, LabelVoided

shipping = BoundedContext(
    "shipping",
    owns=[LabelCreated, LabelVoided],
    subscribes=[OrderCancelled, PaymentAuthorized],
)
