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
* With ``inbox=True`` (EventSeam sets it whenever it has a database) the local path shares the
  inbox (engine.inbox) with the Kafka path (engine.runner), as the runner does it: a sync
  handler's transaction is opened before the handler runs; when the inbox already holds
  ``(handler, event_id)`` the handler is not called. Otherwise it runs in that transaction
  (``ctx.session``) and the inbox row is claimed after it returned: its writes, its follow-ups
  and its inbox row commit together, or roll back together and the event is retried. When the
  claim is lost (the other path committed the event meanwhile) the transaction rolls back and
  the event counts as applied. Claiming last takes no write lock before the handler's own
  writes (SQLite: a handler writing through another connection is not blocked). An async
  handler runs unless the inbox holds the pair; then its inbox row and its buffered follow-ups
  commit in one transaction (dropped when the claim is lost). So in ``dual`` mode each handler
  applies each event once, whichever path comes first, and a flip between modes never applies
  an event twice.
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

from . import inbox as inbox_rows
from .errors import EngineError, HandlerError
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


def handling(name: str) -> None:
    """Make ``current_handler()`` return ``name`` for the rest of this context (the consumer
    runner's appliers run each transaction in a copy of their caller's context)."""
    _handling.set(name)


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
        unit: UnitOfWork | None = None,
    ) -> None:
        self.handler_name = spec.name
        self.context = spec.context
        self.event = event
        self.attempt = attempt
        self._host = host
        self._stack = stack
        self._unit: UnitOfWork | None = unit
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

    def write_follow_ups(self, unit: UnitOfWork | None = None) -> None:
        """Async handlers: write buffered follow-ups in ``unit``, else a transaction of their own.

        Blocking: call it in a worker thread.
        """
        if unit is not None:
            if self._follow_ups:
                unit.publish(*self._follow_ups, context=self.context)
            return
        with self._host.transaction() as own:
            own.publish(*self._follow_ups, context=self.context)


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
    spec: HandlerSpec,
    host: HandlerHost,
    middlewares: Sequence[Middleware] = (),
    *,
    inbox: bool = False,
) -> Subscription:
    """The bus Subscription running ``spec`` (see the module docstring for the contract).

    ``inbox``: claim ``(handler, event_id)`` in the host's database before applying (the host's
    ``transaction()`` must reach the eventseam tables).
    """
    if spec.is_async:
        handle = _async_handler(spec, host, inbox=inbox)
    else:
        handle = _sync_handler(spec, host, inbox=inbox)
    handle = bind_log_context(spec)(wrapped_in(middlewares, handle))
    return Subscription(name=spec.name, event_types=spec.event_types, handle=handle)


def wrapped_in(middlewares: Sequence[Middleware], handle: Handler) -> Handler:
    """``handle`` wrapped in ``middlewares``, the first one outermost (the bus and the runner)."""
    for middleware in reversed(middlewares):
        handle = middleware(handle)
    return handle


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


def _sync_handler(spec: HandlerSpec, host: HandlerHost, *, inbox: bool) -> Handler:
    attempts = _Attempts()
    body = _run_sync_with_inbox if inbox else _run_sync

    async def handle(event: DomainEvent) -> None:
        attempt = attempts.begin(event)
        token = _handling.set(spec.name)
        try:
            await anyio.to_thread.run_sync(body, spec, event, attempt, host)
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


class _ClaimLostError(EngineError):
    """The other path committed the event while this one applied it: roll this one back."""


def _run_sync_with_inbox(
    spec: HandlerSpec, event: DomainEvent, attempt: int, host: HandlerHost
) -> None:
    """``_run_sync`` in one transaction with the inbox: skip, or apply and claim (see above)."""
    try:
        with ExitStack() as stack:
            unit = stack.enter_context(host.transaction())
            if inbox_rows.already_applied(unit.session, spec.name, event.event_id):
                return  # applied by the other path: the transaction ends empty
            if spec.takes_context:
                spec.function(event, HandlerContext(spec, event, attempt, host, stack, unit))
            else:
                spec.function(event)
            if not _claim(unit, spec, event):
                raise _ClaimLostError(spec.name)
    except _ClaimLostError:
        return


def _claim(unit: UnitOfWork, spec: HandlerSpec, event: DomainEvent) -> bool:
    """Insert the inbox row of (handler, event) in ``unit``; False when it exists already."""
    return inbox_rows.claim(
        unit.session, spec.name, event.event_id, event.event_name, context=event.source
    )


def _already_applied(host: HandlerHost, spec: HandlerSpec, event: DomainEvent) -> bool:
    """True when the inbox holds (handler, event) (a read in a transaction of its own)."""
    with host.transaction() as unit:
        return inbox_rows.already_applied(unit.session, spec.name, event.event_id)


def _record_async(
    host: HandlerHost, spec: HandlerSpec, event: DomainEvent, context: HandlerContext | None
) -> None:
    """After an async handler returned: its inbox row and buffered follow-ups, one transaction."""
    with host.transaction() as unit:
        if _claim(unit, spec, event) and context is not None:
            context.write_follow_ups(unit)


def _async_handler(spec: HandlerSpec, host: HandlerHost, *, inbox: bool) -> Handler:
    attempts = _Attempts()

    async def handle(event: DomainEvent) -> None:
        attempt = attempts.begin(event)
        token = _handling.set(spec.name)
        try:
            if inbox:
                await _call_async_with_inbox(spec, event, attempt, host)
            elif spec.takes_context:
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


async def _call_async_with_inbox(
    spec: HandlerSpec, event: DomainEvent, attempt: int, host: HandlerHost
) -> None:
    """Skip an event the inbox holds; else run, then record the inbox row with the follow-ups."""
    if await anyio.to_thread.run_sync(_already_applied, host, spec, event):
        return
    context: HandlerContext | None = None
    if spec.takes_context:
        context = HandlerContext(spec, event, attempt, host, None)
        await spec.function(event, context)  # type: ignore[misc]  # is_async: a coroutine
    else:
        await spec.function(event)  # type: ignore[misc]  # is_async: a coroutine
    await anyio.to_thread.run_sync(_record_async, host, spec, event, context)
