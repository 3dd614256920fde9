"""The shipping context's own tables (prefixed ``shipping_``, in their own MetaData)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import DateTime, Enum, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of the shipping context; ``Base.metadata`` holds only its tables."""

    metadata = MetaData()


class LabelStatus(StrEnum):
    """created when a paid order gets its label; voided when the order is cancelled.

    A label voided before it was ever created (the cancellation arrived first) has no tracking
    number: it is the marker that stops a late label.
    """

    CREATED = "created"
    VOIDED = "voided"


def _now() -> datetime:
    return datetime.now(UTC)


class Label(Base):
    """At most one label per order (``order_id`` is unique)."""

    __tablename__ = "shipping_label"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(40), unique=True)
    carrier: Mapped[str] = mapped_column(String(40))
    tracking_number: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[LabelStatus] = mapped_column(
        Enum(
            LabelStatus,
            native_enum=False,
            length=12,
            values_callable=lambda e: [m.value for m in e],
        )
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=_now, onupdate=_now
    )
