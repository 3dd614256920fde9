"""The payments context's own tables (prefixed ``payments_``, in their own MetaData)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import DateTime, Enum, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of the payments context; ``Base.metadata`` holds only its tables."""

    metadata = MetaData()


class PaymentStatus(StrEnum):
    """authorized or declined when the order is placed; voided when the order is cancelled.

    A payment voided before it was ever authorized (the cancellation arrived first) has
    ``amount_cents`` 0: it is the marker that stops a late authorization.
    """

    AUTHORIZED = "authorized"
    DECLINED = "declined"
    VOIDED = "voided"


def _now() -> datetime:
    return datetime.now(UTC)


class Payment(Base):
    """At most one payment per order (``order_id`` is unique)."""

    __tablename__ = "payments_payment"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(40), unique=True)
    amount_cents: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[PaymentStatus] = mapped_column(
        Enum(
            PaymentStatus,
            native_enum=False,
            length=12,
            values_callable=lambda e: [m.value for m in e],
        )
    )
    decline_reason: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=_now, onupdate=_now
    )
