"""Bounded contexts: who owns which events, and which handlers subscribe to what.

    orders = BoundedContext("orders", owns=[OrderPlaced, OrderCancelled])

    @shipping.handler(PaymentAuthorized, name="create_label_on_payment_authorized")
    def create_label_on_payment_authorized(event: PaymentAuthorized, ctx: HandlerContext) -> None: ...

A handler's durable name is ``"<context>.<name>"``: consumer-group ids and inbox rows are keyed by
it, so it is given explicitly and never derived from the function name (renaming the function
must not make Kafka re-deliver everything).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import HandlerError, OwnershipError, SubscriptionError, UnknownContextError

if TYPE_CHECKING:
    from .events import DomainEvent

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

HandlerFunction = Callable[..., Awaitable[None] | None]
F = TypeVar("F", bound=HandlerFunction)


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """A handler as declared by its context: durable name, subscribed types and the function.

    ``takes_context`` is true when the function accepts a second positional parameter (the
    HandlerContext); ``is_async`` when it is a coroutine function (sync ones run in a thread).
    """

    name: str
    context: str
    event_types: tuple[type[DomainEvent], ...]
    function: HandlerFunction
    is_async: bool
    takes_context: bool

    def accepts(self, event: DomainEvent) -> bool:
        """True when this handler subscribes to the event's class."""
        return isinstance(event, self.event_types)


@dataclass(eq=False)
class BoundedContext:
    """A module of the monolith that talks to others only through events.

    ``events_module`` is the one module other contexts may import (defaults to
    ``contexts.<name>.events``); the boundary check enforces it.

    Access rules: a context publishes only the event types it ``owns`` (OwnershipError). With
    ``subscribes=[...]`` its handlers may subscribe only to those types (SubscriptionError when
    a handler is declared, and again when a ContextMap is built); without it, the types its
    handlers subscribe to are its declaration. ``eventseam acl`` derives Kafka ACLs from both.
    """

    name: str
    owns: Sequence[type[DomainEvent]] = ()
    events_module: str | None = None
    handlers: list[HandlerSpec] = field(default_factory=list)
    subscribes: Sequence[type[DomainEvent]] | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise HandlerError(f"context name {self.name!r} must be lower_snake_case")
        self.owns = tuple(self.owns)
        if self.subscribes is not None:
            self.subscribes = tuple(self.subscribes)
        for event_type in self.owns:
            if event_type.is_abstract():
                raise HandlerError(
                    f"context {self.name!r} cannot own abstract event {event_type.__qualname__}"
                )

    def owns_event(self, event_type: type[DomainEvent]) -> bool:
        """True when this context may publish ``event_type``."""
        return event_type in self.owns

    def handler(self, *event_types: type[DomainEvent], name: str) -> Callable[[F], F]:
        """Decorator: subscribe the function to ``event_types`` under the durable ``name``."""
        if not event_types:
            raise HandlerError(
                f"{self.name}.{name}: a handler subscribes to at least one event type"
            )
        if not _NAME.match(name):
            raise HandlerError(f"handler name {name!r} must be lower_snake_case")
        full_name = f"{self.name}.{name}"
        for event_type in event_types:
            self.check_subscription(full_name, event_type)

        def decorate(function: F) -> F:
            if any(spec.name == full_name for spec in self.handlers):
                raise HandlerError(
                    f"handler {full_name!r} is declared twice; durable names are unique"
                )
            self.handlers.append(
                HandlerSpec(
                    name=full_name,
                    context=self.name,
                    event_types=tuple(event_types),
                    function=function,
                    is_async=inspect.iscoroutinefunction(function),
                    takes_context=_takes_context(full_name, function),
                )
            )
            return function

        return decorate

    def subscribed_types(self) -> set[type[DomainEvent]]:
        """Every event class one of this context's handlers subscribes to."""
        return {t for spec in self.handlers for t in spec.event_types}

    def check_subscription(self, handler: str, event_type: type[DomainEvent]) -> None:
        """Raise SubscriptionError when ``subscribes`` is declared and lacks ``event_type``."""
        if self.subscribes is not None and event_type not in self.subscribes:
            raise SubscriptionError(self.name, handler, event_type.event_name)


def _takes_context(handler: str, function: Callable[..., Any]) -> bool:
    """True for ``(event, ctx)``, False for ``(event)``; HandlerError for any other signature
    (it would fail on every event, not at start-up)."""
    parameters = inspect.signature(function).parameters.values()
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return True
    positional = [p for p in parameters if p.kind in kinds]
    required = [p for p in parameters if p.default is p.empty and p.kind is not p.VAR_KEYWORD]
    if not positional or len(required) > 2 or len(required) > len(positional):
        raise HandlerError(
            f"handler {handler!r} must take (event) or (event, ctx); "
            f"{getattr(function, '__qualname__', function)!r} takes ({', '.join(p.name for p in parameters)})"
        )
    return len(positional) >= 2


class ContextMap:
    """All contexts of one application: lookup by name, ownership of event types, handlers."""

    def __init__(self, contexts: Iterable[BoundedContext]) -> None:
        self._contexts: dict[str, BoundedContext] = {}
        self._owner: dict[type[DomainEvent], str] = {}
        for context in contexts:
            if context.name in self._contexts:
                raise HandlerError(f"context {context.name!r} is registered twice")
            self._contexts[context.name] = context
            for spec in context.handlers:  # handlers appended without the decorator, too
                for subscribed in spec.event_types:
                    context.check_subscription(spec.name, subscribed)
            for event_type in context.owns:
                if event_type in self._owner:
                    raise HandlerError(
                        f"{event_type.event_name} is owned by both {self._owner[event_type]!r} and {context.name!r}"
                    )
                self._owner[event_type] = context.name

    def __getitem__(self, name: str) -> BoundedContext:
        try:
            return self._contexts[name]
        except KeyError:
            raise UnknownContextError(name, sorted(self._contexts)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._contexts

    def __iter__(self) -> Iterator[BoundedContext]:
        return iter(self._contexts.values())

    def names(self) -> list[str]:
        """Context names, in registration order."""
        return list(self._contexts)

    def owner_of(self, event_type: type[DomainEvent]) -> str | None:
        """The name of the context that owns ``event_type``, or None."""
        return self._owner.get(event_type)

    def check_publish(self, context: str, event_type: type[DomainEvent]) -> None:
        """Raise OwnershipError unless ``context`` owns ``event_type``."""
        owner = self._owner.get(event_type)
        if owner != context:
            raise OwnershipError(context, event_type.event_name, owner)

    def event_types(self) -> list[type[DomainEvent]]:
        """Every owned event class, by context."""
        return [t for c in self._contexts.values() for t in c.owns]

    def handlers(self, contexts: Iterable[str] | None = None) -> list[HandlerSpec]:
        """Handlers of the named contexts (all contexts when None)."""
        chosen = self._contexts.values() if contexts is None else [self[n] for n in contexts]
        return [spec for context in chosen for spec in context.handlers]
