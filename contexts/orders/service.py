"""The orders context's use cases: commands (place, cancel) and status updates from events.

Commands run in the caller's transaction (``Transaction``: an EventSeam UnitOfWork or a
HandlerContext) and publish their event in it, so the row and the event commit together.
Status updates are compare-and-set UPDATEs: they only move an order forward (see OrderStatus),
whatever order events arrive in and however often they are delivered.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import CursorResult, select, update

from .errors import DuplicateOrderError, OrderNotCancellableError, OrderNotFoundError
from .events import OrderCancelled, OrderPlaced
from .models import Order, OrderStatus

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy import Update
    from sqlalchemy.orm import Session

    from engine.types import Transaction

    from .commands import CancelOrder, PlaceOrder

#: Statuses an order may be cancelled from (before a label exists).
CANCELLABLE: frozenset[OrderStatus] = frozenset({OrderStatus.PLACED, OrderStatus.CONFIRMED})

#: Target status -> statuses an event may move an order to it from.
FORWARD: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.CONFIRMED: frozenset({OrderStatus.PLACED}),
    OrderStatus.REJECTED: frozenset({OrderStatus.PLACED}),
    OrderStatus.SHIPPED: frozenset({OrderStatus.PLACED, OrderStatus.CONFIRMED}),
}


def place_order(tx: Transaction, command: PlaceOrder) -> OrderPlaced:
    """Write the order (status placed) and publish OrderPlaced in ``tx``; DuplicateOrderError."""
    if tx.session.get(Order, command.order_id) is not None:
        raise DuplicateOrderError(command.order_id)
    order = Order(
        id=command.order_id,
        customer_id=command.customer_id,
        total_cents=command.total_cents,
        currency=command.currency,
        status=OrderStatus.PLACED,
    )
    tx.session.add(order)
    tx.session.flush()
    event = OrderPlaced(
        aggregate_id=order.id,
        order_id=order.id,
        customer_id=order.customer_id,
        total_cents=order.total_cents,
        currency=order.currency,
    )
    tx.publish(event)
    return event


def cancel_order(tx: Transaction, command: CancelOrder) -> OrderCancelled:
    """Cancel a placed or confirmed order and publish OrderCancelled in ``tx``.

    Raises OrderNotFoundError, or OrderNotCancellableError when it shipped, was rejected or was
    already cancelled.
    """
    statement = (
        update(Order)
        .where(Order.id == command.order_id, Order.status.in_(CANCELLABLE))
        .values(status=OrderStatus.CANCELLED, cancel_reason=command.reason, updated_at=_now())
    )
    if _rowcount(tx.session, statement) == 0:
        order = tx.session.get(Order, command.order_id)
        if order is None:
            raise OrderNotFoundError(command.order_id)
        raise OrderNotCancellableError(order.id, order.status.value)
    event = OrderCancelled(
        aggregate_id=command.order_id, order_id=command.order_id, reason=command.reason
    )
    tx.publish(event)
    return event


def advance_order(session: Session, order_id: str, status: OrderStatus) -> bool:
    """Move the order to ``status`` if that is a step forward; False when it was not.

    Raises OrderNotFoundError when the order does not exist (the handler is then retried).
    """
    statement = (
        update(Order)
        .where(Order.id == order_id, Order.status.in_(FORWARD[status]))
        .values(status=status, updated_at=_now())
    )
    if _rowcount(session, statement) == 1:
        return True
    if session.get(Order, order_id) is None:
        raise OrderNotFoundError(order_id)
    return False


def list_orders(session: Session) -> Sequence[Order]:
    """Every order, by id."""
    return session.scalars(select(Order).order_by(Order.id)).all()


def _rowcount(session: Session, statement: Update) -> int:
    """Rows matched by an UPDATE (the compare-and-set succeeded when it is 1)."""
    result = session.execute(statement)
    assert isinstance(result, CursorResult)
    return result.rowcount


def _now() -> datetime:
    return datetime.now(UTC)
