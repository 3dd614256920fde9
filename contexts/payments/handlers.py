"""How payments reacts to orders: charge placed orders, release cancelled ones."""

from __future__ import annotations

from typing import TYPE_CHECKING

from contexts.orders.events import OrderCancelled, OrderPlaced

from .context import payments
from .service import settle_order, void_payment

if TYPE_CHECKING:
    from engine.handler_context import HandlerContext


@payments.handler(OrderPlaced, name="authorize_payment_on_order_placed")
def authorize_payment_on_order_placed(event: OrderPlaced, ctx: HandlerContext) -> None:
    """Authorize or decline the order's payment (PaymentAuthorized / PaymentDeclined)."""
    settle_order(ctx, event)


@payments.handler(OrderCancelled, name="void_payment_on_order_cancelled")
def void_payment_on_order_cancelled(event: OrderCancelled, ctx: HandlerContext) -> None:
    """Release the order's authorization (PaymentVoided), or stop one still to come."""
    void_payment(ctx, event)
