"""The payments context's use cases: authorize or decline an order's payment, void it.

The decision is deterministic (there is no real card network in the example):

* ``card_declined`` when the customer is on DECLINED_CUSTOMERS (a test card that always fails);
* ``over_limit`` when the total is above CARD_LIMIT_CENTS;
* authorized otherwise.

Both use cases run in the handler's transaction and are idempotent and race-free: an order has
at most one Payment row (unique ``order_id``), created by an INSERT that does nothing when the
row exists (PostgreSQL waits for a concurrent insert to commit; SQLite serializes writers). So
``settle_order`` and ``void_payment`` give the same end state whichever runs first, and a
repeated event changes nothing.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import CursorResult, Insert, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from .events import PaymentAuthorized, PaymentDeclined, PaymentVoided
from .models import Payment, PaymentStatus

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.orm import Session

    from contexts.orders.events import OrderCancelled, OrderPlaced
    from engine.types import Transaction

#: Orders above this total (in cents) are declined as ``over_limit``.
CARD_LIMIT_CENTS = 100_000
#: Customers whose card is always declined (``card_declined``).
DECLINED_CUSTOMERS: frozenset[str] = frozenset({"cus_declined"})


def decline_reason(customer_id: str, amount_cents: int) -> str | None:
    """Why a payment of ``amount_cents`` by ``customer_id`` is declined; None to authorize."""
    if customer_id in DECLINED_CUSTOMERS:
        return "card_declined"
    if amount_cents > CARD_LIMIT_CENTS:
        return "over_limit"
    return None


def settle_order(tx: Transaction, order: OrderPlaced) -> PaymentAuthorized | PaymentDeclined | None:
    """Authorize or decline the order's payment and publish the outcome in ``tx``.

    Returns the published event, or None (publishing nothing) when the order already has a
    payment: a repeated event, or a cancellation that arrived first.
    """
    reason = decline_reason(order.customer_id, order.total_cents)
    payment_id = _new_payment_id()
    status = PaymentStatus.DECLINED if reason else PaymentStatus.AUTHORIZED
    row = _row(
        payment_id,
        order.order_id,
        order.total_cents,
        status,
        currency=order.currency,
        decline_reason=reason,
    )
    if not _insert_unless_present(tx.session, row):
        return None
    outcome = _outcome(payment_id, order, reason)
    tx.publish(outcome)
    return outcome


def void_payment(tx: Transaction, cancelled: OrderCancelled) -> PaymentVoided | None:
    """Void the order's authorization (publishing PaymentVoided), or mark it never to be made.

    With no payment yet, a voided marker row (amount 0) stops a later authorization. A declined
    or already voided payment is left as it is. Returns the published event, if any.
    """
    marker = _row(_new_payment_id(), cancelled.order_id, 0, PaymentStatus.VOIDED)
    if _insert_unless_present(tx.session, marker):
        return None
    voided = update(Payment).where(
        Payment.order_id == cancelled.order_id, Payment.status == PaymentStatus.AUTHORIZED
    )
    result = tx.session.execute(voided.values(status=PaymentStatus.VOIDED))
    if not isinstance(result, CursorResult) or result.rowcount != 1:
        return None
    payment = tx.session.scalars(
        select(Payment).where(Payment.order_id == cancelled.order_id)
    ).one()
    event = PaymentVoided(
        aggregate_id=payment.id,
        payment_id=payment.id,
        order_id=payment.order_id,
        amount_cents=payment.amount_cents,
    )
    tx.publish(event)
    return event


def list_payments(session: Session) -> Sequence[Payment]:
    """Every payment, by order id."""
    return session.scalars(select(Payment).order_by(Payment.order_id)).all()


def _row(
    payment_id: str,
    order_id: str,
    amount_cents: int,
    status: PaymentStatus,
    *,
    currency: str = "EUR",
    decline_reason: str | None = None,
) -> dict[str, Any]:
    return {
        "id": payment_id,
        "order_id": order_id,
        "amount_cents": amount_cents,
        "currency": currency,
        "status": status,
        "decline_reason": decline_reason,
    }


def _outcome(
    payment_id: str, order: OrderPlaced, reason: str | None
) -> PaymentAuthorized | PaymentDeclined:
    if reason is None:
        return PaymentAuthorized(
            aggregate_id=payment_id,
            payment_id=payment_id,
            order_id=order.order_id,
            amount_cents=order.total_cents,
            currency=order.currency,
        )
    return PaymentDeclined(
        aggregate_id=payment_id,
        payment_id=payment_id,
        order_id=order.order_id,
        amount_cents=order.total_cents,
        reason=reason,
    )


def _insert_unless_present(session: Session, values: dict[str, Any]) -> bool:
    """INSERT the order's payment row unless it has one; True when this call inserted it."""
    statement = _insert_ignoring_order_conflict(session.get_bind().dialect.name)
    if statement is None:  # another database: check, then insert (a race fails and is retried)
        if session.scalars(
            select(Payment.id).where(Payment.order_id == values["order_id"])
        ).first():
            return False
        session.execute(insert(Payment).values(**values))
        return True
    return session.execute(statement.values(**values).returning(Payment.id)).first() is not None


def _insert_ignoring_order_conflict(dialect: str) -> Insert | None:
    if dialect == "postgresql":
        return postgresql.insert(Payment).on_conflict_do_nothing(index_elements=["order_id"])
    if dialect == "sqlite":
        return sqlite.insert(Payment).on_conflict_do_nothing(index_elements=["order_id"])
    return None


def _new_payment_id() -> str:
    return f"pay_{uuid.uuid4().hex[:12]}"
