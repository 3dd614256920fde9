"""How shipping reacts: a label for every paid order, none for a cancelled one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from contexts.orders.events import OrderCancelled
from contexts.payments.events import PaymentAuthorized

from .context import shipping
from .service import create_label, void_label

if TYPE_CHECKING:
    from engine.handler_context import HandlerContext


@shipping.handler(PaymentAuthorized, name="create_label_on_payment_authorized")
def create_label_on_payment_authorized(event: PaymentAuthorized, ctx: HandlerContext) -> None:
    """Print a label for the paid order (LabelCreated)."""
    create_label(ctx, event)


@shipping.handler(OrderCancelled, name="void_label_on_order_cancelled")
def void_label_on_order_cancelled(event: OrderCancelled, ctx: HandlerContext) -> None:
    """Void the cancelled order's label (LabelVoided), or stop one still to come."""
    void_label(ctx, event)
