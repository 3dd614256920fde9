"""The orders context object: the events it owns. Handlers attach to it in handlers.py."""

from __future__ import annotations

from engine.contexts import BoundedContext

from .events import OrderCancelled, OrderPlaced

orders = BoundedContext("orders", owns=[OrderPlaced, OrderCancelled])
