"""Small protocols the engine is built from. Fakes in tests implement these."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .events import DomainEvent

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

Handler = Callable[[DomainEvent], Awaitable[None]]
"""An async callable that applies one event. Raising means "failed, retry me"."""

Middleware = Callable[[Handler], Handler]
"""Wraps a handler in behaviour (logging, inbox, thread offload): Handler -> Handler."""


@dataclass(frozen=True, slots=True)
class Message:
    """One record for a broker: key, value and headers (a list, never a tuple)."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


@runtime_checkable
class Publisher(Protocol):
    """Sends messages to a topic of a broker.

    ``publish`` returns once the broker acknowledged every message, in order per key, or raises;
    it must be safe to call from one task at a time. ``aclose`` flushes and releases connections.
    """

    async def publish(self, topic: str, *messages: Message) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Subscription:
    """A handler as the bus sees it: durable name, a type filter and the wrapped async callable."""

    name: str
    event_types: tuple[type[DomainEvent], ...]
    handle: Handler

    def accepts(self, event: DomainEvent) -> bool:
        """True when the handler subscribes to ``event``'s class."""
        return isinstance(event, self.event_types)


class EventSink(Protocol):
    """Where committed events go for local dispatch (the bus, or a fake in tests)."""

    def publish_nowait(self, *events: DomainEvent) -> None: ...


SubscriptionList = Sequence[Subscription]


class Transaction(Protocol):
    """An open business transaction: its Session, and publish() writing events into it.

    Both engine.unit_of_work.UnitOfWork and engine.handler_context.HandlerContext satisfy it, so
    a context's use cases run unchanged from host code and from handlers.
    """

    @property
    def session(self) -> Session: ...

    def publish(self, *events: DomainEvent) -> None: ...
