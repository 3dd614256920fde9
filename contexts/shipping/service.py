"""The shipping context's use cases: create a label for a paid order, void it on cancellation.

Both run in the handler's transaction and are idempotent and race-free: an order has at most
one Label row (unique ``order_id``), created by an INSERT that does nothing when the row exists
(PostgreSQL waits for a concurrent insert to commit; SQLite serializes writers). So
``create_label`` and ``void_label`` give the same end state whichever runs first, and a
repeated event changes nothing.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import CursorResult, Insert, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from .events import LabelCreated, LabelVoided
from .models import Label, LabelStatus

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.orm import Session

    from contexts.orders.events import OrderCancelled
    from contexts.payments.events import PaymentAuthorized
    from engine.types import Transaction

CARRIER = "DemoPost"


def create_label(tx: Transaction, payment: PaymentAuthorized) -> LabelCreated | None:
    """Print a label for the paid order and publish LabelCreated in ``tx``.

    Returns the published event, or None (publishing nothing) when the order already has a
    label: a repeated event, or a cancellation that arrived first.
    """
    label_id, tracking = _new_label_id(), f"DP{uuid.uuid4().int % 10**10:010d}"
    values = {
        "id": label_id,
        "order_id": payment.order_id,
        "carrier": CARRIER,
        "tracking_number": tracking,
        "status": LabelStatus.CREATED,
    }
    if not _insert_unless_present(tx.session, values):
        return None
    event = LabelCreated(
        aggregate_id=label_id,
        label_id=label_id,
        order_id=payment.order_id,
        carrier=CARRIER,
        tracking_number=tracking,
    )
    tx.publish(event)
    return event


def void_label(tx: Transaction, cancelled: OrderCancelled) -> LabelVoided | None:
    """Void the order's label (publishing LabelVoided), or mark it never to be printed.

    With no label yet, a voided marker row (no tracking number) stops a later one. Returns the
    published event, if any.
    """
    marker = {
        "id": _new_label_id(),
        "order_id": cancelled.order_id,
        "carrier": CARRIER,
        "tracking_number": None,
        "status": LabelStatus.VOIDED,
    }
    if _insert_unless_present(tx.session, marker):
        return None
    voided = update(Label).where(
        Label.order_id == cancelled.order_id, Label.status == LabelStatus.CREATED
    )
    result = tx.session.execute(voided.values(status=LabelStatus.VOIDED))
    if not isinstance(result, CursorResult) or result.rowcount != 1:
        return None
    label_id = tx.session.scalars(
        select(Label.id).where(Label.order_id == cancelled.order_id)
    ).one()
    event = LabelVoided(aggregate_id=label_id, label_id=label_id, order_id=cancelled.order_id)
    tx.publish(event)
    return event


def list_labels(session: Session) -> Sequence[Label]:
    """Every label, by order id."""
    return session.scalars(select(Label).order_by(Label.order_id)).all()


def _insert_unless_present(session: Session, values: dict[str, Any]) -> bool:
    """INSERT the order's label row unless it has one; True when this call inserted it."""
    statement = _insert_ignoring_order_conflict(session.get_bind().dialect.name)
    if statement is None:  # another database: check, then insert (a race fails and is retried)
        if session.scalars(select(Label.id).where(Label.order_id == values["order_id"])).first():
            return False
        session.execute(insert(Label).values(**values))
        return True
    return session.execute(statement.values(**values).returning(Label.id)).first() is not None


def _insert_ignoring_order_conflict(dialect: str) -> Insert | None:
    if dialect == "postgresql":
        return postgresql.insert(Label).on_conflict_do_nothing(index_elements=["order_id"])
    if dialect == "sqlite":
        return sqlite.insert(Label).on_conflict_do_nothing(index_elements=["order_id"])
    return None


def _new_label_id() -> str:
    return f"lbl_{uuid.uuid4().hex[:12]}"
