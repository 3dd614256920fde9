"""What a handler sees while it runs, and how a declared handler becomes a bus Subscription.

    @shipping.handler(PaymentAuthorized, name="create_label_on_payment_authorized")
    def create_label_on_payment_authorized(event: PaymentAuthorized, ctx: HandlerContext) -> None:
        ctx.session.add(Label(order_id=event.order_id))
        ctx.publish(LabelCreated(aggregate_id=event.aggregate_id, order_id=event.order_id))

Contract of ``subscription_for(spec, host)``:

* Sync functions run in a worker thread (``anyio.to_thread.run_sync``), never on the loop.
* A function with a second parameter receives a HandlerContext. For a sync handler,
  ``ctx.session`` is a Session of its own transaction (opened on first use from the host's
  sessionmaker), committed when the handler returns and rolled back when it raises; follow-up
  events from ``ctx.publish`` are written to the outbox in that transaction, so the handler's
  writes and its follow-ups commit together, and are dispatched after that commit.
* An async handler has no sync Session (``ctx.session`` raises HandlerError); its follow-ups
  are buffered and written in a transaction of their own once it returns (dropped if it raises).
* Follow-ups are stamped with causation/correlation (``DomainEvent.caused``) and checked for
  ownership by the handler's context when ``ctx.publish`` is called.
* While the handler runs, ``current_handler()`` returns its durable name (in its worker thread
  too), and structlog contextvars hold event_id, event_type, context,
  correlation_id and handler. Extra middlewares (``Handler -> Handler``) wrap the handler inside
  that binding, the first one outermost.
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import ExitStack
from contextvars import ContextVar
from typing import TYPE_CHECKING, Protocol

import anyio.to_thread
from structlog.contextvars import bound_contextvars

from .errors import HandlerError
from .types import Subscription

if TYPE_CHECKING:
    import uuid
    from collections.abc import Sequence
    from contextlib import AbstractContextManager

    from sqlalchemy.orm import Session

    from .contexts import HandlerSpec
    from .events import DomainEvent
    from .types import Handler, Middleware
    from .unit_of_work import UnitOfWork

#: Attempts remembered per handler for events that are failing (oldest forgotten beyond this).
ATTEMPTS_REMEMBERED = 10_000

_handling: ContextVar[str | None] = ContextVar("eventseam_handling", default=None)


def current_handler() -> str | None:
    """Durable name of the handler running in this context (its worker thread included), or None."""
    return _handling.get()


class HandlerHost(Protocol):
    """What handlers need from the engine (EventSeam implements it)."""

    def transaction(self) -> AbstractContextManager[UnitOfWork]:
        """A new transaction on its own Session; commit on exit, rollback on exception."""
        ...

    def check_publish(self, context: str, event_type: type[DomainEvent]) -> None:
        """Raise OwnershipError unless ``context`` owns ``event_type``."""
        ...


class HandlerContext:
    """The running handler's view of the engine. Not thread safe: use it in the handler only.

    ``attempt`` counts deliveries of this event to this handler in this process (1 first, 2 on
    the first retry...).
    """

    __slots__ = (
        "_follow_ups",
        "_host",
        "_stack",
        "_unit",
        "attempt",
        "context",
        "event",
        "handler_name",
    )

    def __init__(
        self,
        spec: HandlerSpec,
        event: DomainEvent,
        attempt: int,
        host: HandlerHost,
        stack: ExitStack | None,
    ) -> None:
        self.handler_name = spec.name
        self.context = spec.context
        self.event = event
        self.attempt = attempt
        self._host = host
        self._stack = stack
        self._unit: UnitOfWork | None = None
        self._follow_ups: list[DomainEvent] = []

    @property
    def session(self) -> Session:
        """The Session of this handler's transaction (sync handlers only); opened on first use."""
        return self._unit_of_work().session

    def publish(self, *events: DomainEvent) -> None:
        """Publish follow-up events, caused by the handled event, from this handler's context."""
        stamped = [self.event.caused(event) for event in events]
        for event in stamped:
            self._host.check_publish(self.context, type(event))
        if self._stack is None:
            self._follow_ups.extend(stamped)
        else:
            self._unit_of_work().publish(*stamped, context=self.context)

    def _unit_of_work(self) -> UnitOfWork:
        if self._stack is None:
            raise HandlerError(
                f"{self.handler_name} is async: it gets no sync Session; use your own AsyncSession, "
                "or a sync handler for writes that must commit with its follow-up events"
            )
        if self._unit is None:
            self._unit = self._stack.enter_context(self._host.transaction())
        return self._unit

    def write_follow_ups(self) -> None:
        """Async handlers: write buffered follow-ups in a transaction of their own (in a thread)."""
        with self._host.transaction() as unit:
            unit.publish(*self._follow_ups, context=self.context)


class _Attempts:
    """Counts deliveries per event id until one succeeds (bounded; used on the loop thread)."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: OrderedDict[uuid.UUID, int] = OrderedDict()

    def begin(self, event: DomainEvent) -> int:
        attempt = self._counts.pop(event.event_id, 0) + 1
        self._counts[event.event_id] = attempt
        if len(self._counts) > ATTEMPTS_REMEMBERED:
            self._counts.popitem(last=False)
        return attempt

    def succeeded(self, event: DomainEvent) -> None:
        self._counts.pop(event.event_id, None)


def subscription_for(
    spec: HandlerSpec, host: HandlerHost, middlewares: Sequence[Middleware] = ()
) -> Subscription:
    """The bus Subscription running ``spec`` (see the module docstring for the contract)."""
    handle = _async_handler(spec, host) if spec.is_async else _sync_handler(spec, host)
    for middleware in reversed(middlewares):
        handle = middleware(handle)
    handle = bind_log_context(spec)(handle)
    return Subscription(name=spec.name, event_types=spec.event_types, handle=handle)


def bind_log_context(spec: HandlerSpec) -> Middleware:
    """Middleware binding structlog contextvars for the duration of each call."""

    def middleware(handle: Handler) -> Handler:
        async def bound(event: DomainEvent) -> None:
            with bound_contextvars(
                event_id=str(event.event_id),
                event_type=event.event_name,
                context=spec.context,
                correlation_id=str(event.correlation_id or event.event_id),
                handler=spec.name,
            ):
                await handle(event)

        return bound

    return middleware


def _sync_handler(spec: HandlerSpec, host: HandlerHost) -> Handler:
    attempts = _Attempts()

    async def handle(event: DomainEvent) -> None:
        attempt = attempts.begin(event)
        token = _handling.set(spec.name)
        try:
            await anyio.to_thread.run_sync(_run_sync, spec, event, attempt, host)
        finally:
            _handling.reset(token)
        attempts.succeeded(event)

    return handle


def _run_sync(spec: HandlerSpec, event: DomainEvent, attempt: int, host: HandlerHost) -> None:
    """Worker-thread body of a sync handler: its transaction commits iff it returns."""
    if not spec.takes_context:
        spec.function(event)
        return
    with ExitStack() as stack:
        spec.function(event, HandlerContext(spec, event, attempt, host, stack))


def _async_handler(spec: HandlerSpec, host: HandlerHost) -> Handler:
    attempts = _Attempts()

    async def handle(event: DomainEvent) -> None:
        attempt = attempts.begin(event)
        token = _handling.set(spec.name)
        try:
            if spec.takes_context:
                await _call_async_with_context(spec, event, attempt, host)
            else:
                await spec.function(event)  # type: ignore[misc]  # is_async: a coroutine
        finally:
            _handling.reset(token)
        attempts.succeeded(event)

    return handle


async def _call_async_with_context(
    spec: HandlerSpec, event: DomainEvent, attempt: int, host: HandlerHost
) -> None:
    context = HandlerContext(spec, event, attempt, host, None)
    await spec.function(event, context)  # type: ignore[misc]  # is_async: a coroutine
    if context._follow_ups:
        await anyio.to_thread.run_sync(context.write_follow_ups)
