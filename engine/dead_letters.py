"""Dead letters: events a handler could not apply, kept so they can be inspected and replayed.

The bus records a DeadLetter when a handler failed on every attempt (``reason="failed"``) or when
shutdown's drain timeout left an event undelivered (``reason="shutdown"``). Nothing is dropped
silently: ``Bus.redeliver(letter.id)`` hands the event back to its handler.
"""

from __future__ import annotations

import builtins
import threading
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from .errors import UnknownDeadLetterError
from .events import new_event_id

if TYPE_CHECKING:
    import uuid

    from .events import DomainEvent

DeadLetterReason = Literal["failed", "shutdown"]
"""Why the event was dead-lettered: every attempt failed, or shutdown left it undelivered."""


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One event one handler did not apply: the event, the last error and how many attempts."""

    handler: str
    event: DomainEvent
    error_type: str
    error_message: str
    traceback: str
    attempts: int
    reason: DeadLetterReason = "failed"
    failed_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    id: uuid.UUID = field(default_factory=new_event_id)

    @classmethod
    def from_error(
        cls,
        handler: str,
        event: DomainEvent,
        error: BaseException,
        attempts: int,
        reason: DeadLetterReason = "failed",
    ) -> DeadLetter:
        """A dead letter carrying ``error``'s type, message and formatted traceback."""
        return cls(
            handler=handler,
            event=event,
            error_type=_type_name(error),
            error_message=str(error),
            traceback="".join(traceback.format_exception(error)),
            attempts=attempts,
            reason=reason,
        )


@runtime_checkable
class DeadLetterStore(Protocol):
    """Where dead letters are kept. Implementations must be thread safe.

    ``list`` returns letters in the order they were added (per aggregate this is publish order,
    so replaying in list order keeps it). ``get`` and ``remove`` raise UnknownDeadLetterError for
    an unknown id; ``remove`` returns the letter it removed.
    """

    def add(self, letter: DeadLetter) -> None: ...

    def list(self, *, handler: str | None = None) -> builtins.list[DeadLetter]: ...

    def get(self, letter_id: uuid.UUID) -> DeadLetter: ...

    def remove(self, letter_id: uuid.UUID) -> DeadLetter: ...

    def count(self, *, handler: str | None = None) -> int: ...


class InMemoryDeadLetterStore:
    """The default DeadLetterStore: a dict in insertion order, guarded by a lock."""

    def __init__(self) -> None:
        self._letters: dict[uuid.UUID, DeadLetter] = {}
        self._lock = threading.Lock()

    def add(self, letter: DeadLetter) -> None:
        """Keep ``letter`` (adding the same id again replaces it and moves it last)."""
        with self._lock:
            self._letters.pop(letter.id, None)
            self._letters[letter.id] = letter

    def list(self, *, handler: str | None = None) -> builtins.list[DeadLetter]:
        """Letters in the order they were added, optionally only those of ``handler``."""
        with self._lock:
            letters = builtins.list(self._letters.values())
        return letters if handler is None else [x for x in letters if x.handler == handler]

    def get(self, letter_id: uuid.UUID) -> DeadLetter:
        """The letter with ``letter_id``; UnknownDeadLetterError when absent."""
        with self._lock:
            try:
                return self._letters[letter_id]
            except KeyError:
                raise UnknownDeadLetterError(letter_id) from None

    def remove(self, letter_id: uuid.UUID) -> DeadLetter:
        """Remove and return the letter with ``letter_id``; UnknownDeadLetterError when absent."""
        with self._lock:
            try:
                return self._letters.pop(letter_id)
            except KeyError:
                raise UnknownDeadLetterError(letter_id) from None

    def count(self, *, handler: str | None = None) -> int:
        """How many letters are kept, optionally only those of ``handler``."""
        with self._lock:
            if handler is None:
                return len(self._letters)
            return sum(1 for x in self._letters.values() if x.handler == handler)
