"""Handlers that use the Django ORM.

Sync handlers run in the engine's worker threads, outside any request, so Django never closes
the connections they open. Decorate them with ``uses_django_db``: as around a request, stale
connections are closed before the handler runs and after it returns (``CONN_MAX_AGE`` applies)::

    @shipping.handler(PaymentAuthorized, name="create_label_on_payment_authorized")
    @uses_django_db
    def create_label_on_payment_authorized(event: PaymentAuthorized) -> None:
        with transaction.atomic():
            label = Label.objects.create(order_id=event.order_id)
            publish(event.caused(LabelCreated(aggregate_id=event.aggregate_id, label_id=label.pk)))

Follow-up events go through ``publish`` inside the handler's atomic block, stamped with
``event.caused(...)``: they commit with the handler's writes and are dispatched after that commit.
(``HandlerContext.session``/``publish`` work too: a SQLAlchemy Session of the handler's own
transaction on ``database_url``, derived from DATABASES; engine.integrations.django.seam.) A
handler that raises is retried by the bus, then dead-lettered.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, ParamSpec, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["uses_django_db"]

P = ParamSpec("P")
R = TypeVar("R")


def uses_django_db(function: Callable[P, R]) -> Callable[P, R]:
    """Close stale Django connections of the calling thread before and after ``function`` (sync only)."""
    from django.db import close_old_connections

    @functools.wraps(function)
    def handler(*args: P.args, **kwargs: P.kwargs) -> R:
        close_old_connections()
        try:
            return function(*args, **kwargs)
        finally:
            close_old_connections()

    return handler
