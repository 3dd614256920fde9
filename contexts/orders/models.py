"""The orders context's own tables (prefixed ``orders_``, in their own MetaData)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import DateTime, Enum, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of the orders context; ``Base.metadata`` holds only its tables."""

    metadata = MetaData()


class OrderStatus(StrEnum):
    """Life cycle of an order, as the orders context sees it.

    placed ──PaymentAuthorized──> confirmed ──LabelCreated──> shipped
      ├────PaymentDeclined──> rejected
      └─(placed or confirmed)──cancel_order──> cancelled

    Updates only move forward (placed < confirmed < shipped); rejected, shipped and cancelled
    are final, so events arriving late or twice never move an order back.
    """

    PLACED = "placed"
    CONFIRMED = "confirmed"
    SHIPPED = "shipped"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


def _now() -> datetime:
    return datetime.now(UTC)


class Order(Base):
    """An order: who bought, how much, and where it stands."""

    __tablename__ = "orders_order"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(40), index=True)
    total_cents: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[OrderStatus] = mapped_column(
        Enum(
            OrderStatus,
            native_enum=False,
            length=12,
            values_callable=lambda e: [m.value for m in e],
        )
    )
    cancel_reason: Mapped[str | None] = mapped_column(String(200))
    placed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=_now, onupdate=_now
    )
