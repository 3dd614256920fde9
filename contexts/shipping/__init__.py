"""The shipping context: prints a label for each paid order, voids it when the order is cancelled.

Publishes ``LabelCreated`` and ``LabelVoided`` (``contexts.shipping.events``); listens to
``PaymentAuthorized`` and ``OrderCancelled``. Table: ``shipping_label``.
"""

from __future__ import annotations

from . import handlers as handlers  # declares the handlers on the context
from .context import shipping as shipping

__all__ = ["shipping"]
