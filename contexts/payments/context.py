"""The payments context object: the events it owns. Handlers attach to it in handlers.py."""

from __future__ import annotations

from engine.contexts import BoundedContext

from .events import PaymentAuthorized, PaymentDeclined, PaymentVoided

payments = BoundedContext("payments", owns=[PaymentAuthorized, PaymentDeclined, PaymentVoided])
