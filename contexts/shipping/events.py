"""Events published by the shipping context: its published language, importable by any context.

Every event's ``aggregate_id`` is the label id; ``order_id`` says which order it ships.
"""

from __future__ import annotations

from engine.events import DomainEvent


class LabelCreated(DomainEvent, name="shipping.LabelCreated", version=1):
    """A shipping label was printed for a paid order; the parcel is on its way."""

    label_id: str
    order_id: str
    carrier: str
    tracking_number: str


class LabelVoided(DomainEvent, name="shipping.LabelVoided", version=1):
    """A label was cancelled because its order was cancelled before the parcel left."""

    label_id: str
    order_id: str
