"""Errors raised by the orders context's commands (event handlers never raise them).

OrdersError
├── OrderNotFoundError        no order has this id
├── DuplicateOrderError       PlaceOrder reused an existing order id
└── OrderNotCancellableError  the order already shipped, was rejected or was cancelled
"""

from __future__ import annotations


class OrdersError(Exception):
    """Root of the orders context's errors."""


class OrderNotFoundError(OrdersError, LookupError):
    """Raised by commands naming an order that does not exist."""

    def __init__(self, order_id: str) -> None:
        self.order_id = order_id
        super().__init__(f"no order {order_id!r}")


class DuplicateOrderError(OrdersError):
    """Raised by place_order when the order id is already taken."""

    def __init__(self, order_id: str) -> None:
        self.order_id = order_id
        super().__init__(f"order {order_id!r} already exists")


class OrderNotCancellableError(OrdersError):
    """Raised by cancel_order when the order is past the point where it can be cancelled."""

    def __init__(self, order_id: str, status: str) -> None:
        self.order_id, self.status = order_id, status
        super().__init__(f"order {order_id!r} is {status} and can no longer be cancelled")
