"""Errors of the Django integration.

engine.errors.TransactionError
└── outbox.errors.OutsideTransactionError
    └── OutsideAtomicBlockError     publish() outside ``transaction.atomic()``, or on an event loop
engine.errors.SettingsError + django.core.exceptions.ImproperlyConfigured
└── EventSeamImproperlyConfigured   settings.EVENTSEAM cannot be used (the system checks say why)
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from engine.errors import SettingsError
from outbox.errors import OutsideTransactionError


class OutsideAtomicBlockError(OutsideTransactionError):
    """Raised by ``publish`` when Django's connection ``using`` has no open atomic block.

    ``in_event_loop`` is True when the caller runs an event loop (async code), where Django keeps
    no transaction: such callers use ``apublish`` or run their atomic function with
    ``sync_to_async``.
    """

    def __init__(self, using: str, *, in_event_loop: bool = False) -> None:
        self.using, self.in_event_loop = using, in_event_loop
        if in_event_loop:
            message = (
                "eventseam's Django publish() is synchronous and was called from a running event "
                "loop; in async code use `await apublish(...)`, or run the function that writes "
                "and publishes inside `transaction.atomic()` with `sync_to_async`"
            )
        else:
            message = (
                f"eventseam's Django publish() needs an open transaction on database {using!r}: "
                f"call it inside `with transaction.atomic(using={using!r}):` (or a view under "
                "ATOMIC_REQUESTS) together with the business write; in autocommit mode the "
                "outbox rows would commit on their own"
            )
        super().__init__(message)


class EventSeamImproperlyConfigured(SettingsError, ImproperlyConfigured):
    """Raised when settings.EVENTSEAM cannot be turned into an EventSeam (``manage.py check`` details it)."""
