"""How orders reacts to other contexts: it moves the order's status forward.

PaymentAuthorized -> confirmed, PaymentDeclined -> rejected, LabelCreated -> shipped. A late or
repeated event never moves an order back (service.advance_order is a compare-and-set).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from contexts.payments.events import PaymentAuthorized, PaymentDeclined
from contexts.shipping.events import LabelCreated

from .context import orders
from .models import OrderStatus
from .service import advance_order

if TYPE_CHECKING:
    from engine.handler_context import HandlerContext

_log = structlog.get_logger()


@orders.handler(PaymentAuthorized, name="confirm_order_on_payment_authorized")
def confirm_order_on_payment_authorized(event: PaymentAuthorized, ctx: HandlerContext) -> None:
    """The payment went through: the order is confirmed (unless it moved on already)."""
    _advance(ctx, event.order_id, OrderStatus.CONFIRMED)


@orders.handler(PaymentDeclined, name="reject_order_on_payment_declined")
def reject_order_on_payment_declined(event: PaymentDeclined, ctx: HandlerContext) -> None:
    """The payment was declined: the order is rejected (unless it was cancelled first)."""
    _advance(ctx, event.order_id, OrderStatus.REJECTED)


@orders.handler(LabelCreated, name="mark_order_shipped_on_label_created")
def mark_order_shipped_on_label_created(event: LabelCreated, ctx: HandlerContext) -> None:
    """A shipping label exists: the order counts as shipped (unless it was cancelled first)."""
    _advance(ctx, event.order_id, OrderStatus.SHIPPED)


def _advance(ctx: HandlerContext, order_id: str, status: OrderStatus) -> None:
    if not advance_order(ctx.session, order_id, status):
        _log.info("orders.status_unchanged", order_id=order_id, wanted=status.value)
