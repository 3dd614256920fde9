"""The orders context: customers place and cancel orders; statuses follow payment and shipping.

Publishes ``OrderPlaced`` and ``OrderCancelled`` (``contexts.orders.events``); listens to
``PaymentAuthorized``, ``PaymentDeclined`` and ``LabelCreated``. Table: ``orders_order``.
"""

from __future__ import annotations

from . import handlers as handlers  # declares the handlers on the context
from .context import orders as orders

__all__ = ["orders"]
