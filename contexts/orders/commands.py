"""Commands the orders context accepts: imperative requests that may be refused."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PlaceOrder(_Command):
    """Place an order; ``order_id`` is chosen by the caller so retries are idempotent."""

    order_id: str = Field(min_length=1, max_length=40)
    customer_id: str = Field(min_length=1, max_length=40)
    total_cents: int = Field(gt=0)
    currency: str = Field("EUR", min_length=3, max_length=3)


class CancelOrder(_Command):
    """Cancel an order that has not shipped yet."""

    order_id: str
    reason: str = "customer request"
