"""The payments context: authorizes or declines each order's payment, voids cancelled ones.

Publishes ``PaymentAuthorized``, ``PaymentDeclined`` and ``PaymentVoided``
(``contexts.payments.events``); listens to ``OrderPlaced`` and ``OrderCancelled``.
Table: ``payments_payment``.
"""

from __future__ import annotations

from . import handlers as handlers  # declares the handlers on the context
from .context import payments as payments

__all__ = ["payments"]
