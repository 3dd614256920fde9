"""HandlerContext and subscription_for: threads, transactions, follow-ups, logging, middlewares."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import pytest
from structlog.contextvars import get_contextvars

from engine.contexts import BoundedContext, ContextMap, HandlerSpec
from engine.errors import HandlerError, OwnershipError
from engine.events import DomainEvent
from engine.handler_context import HandlerContext, current_handler, subscription_for
from engine.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.orm import Session

    from engine.types import Handler

pytestmark = pytest.mark.anyio


class OrderPlaced(DomainEvent, name="orders.OrderPlaced"):
    order_id: str


class ParcelShipped(DomainEvent, name="shipping.ParcelShipped"):
    parcel_id: str


class FakeSession:
    """Stands in for the handler's Session; only its identity matters here."""


class FakeHost:
    """A HandlerHost whose transactions record their outcome and the events published in them."""

    def __init__(self, contexts: ContextMap) -> None:
        self.contexts = contexts
        self.outcomes: list[str] = []
        self.published: list[tuple[object, list[DomainEvent], str | None]] = []

    @contextmanager
    def transaction(self) -> Iterator[UnitOfWork]:
        try:
            yield UnitOfWork(cast("Session", FakeSession()), self._publish)
        except BaseException:
            self.outcomes.append("rollback")
            raise
        self.outcomes.append("commit")

    def _publish(
        self, target: Session, /, *events: DomainEvent, context: str | None = None
    ) -> None:
        self.published.append((target, list(events), context))

    def check_publish(self, context: str, event_type: type[DomainEvent]) -> None:
        self.contexts.check_publish(context, event_type)


def placed() -> OrderPlaced:
    return OrderPlaced(aggregate_id="order-1", order_id="order-1", source="orders")


def shipped() -> ParcelShipped:
    return ParcelShipped(aggregate_id="order-1", parcel_id="parcel-1")


def setup(function: Any, name: str = "ship_on_order_placed") -> tuple[HandlerSpec, FakeHost]:
    """Declare ``function`` as a shipping handler of OrderPlaced; return its spec and a host."""
    orders = BoundedContext("orders", owns=[OrderPlaced])
    shipping = BoundedContext("shipping", owns=[ParcelShipped])
    shipping.handler(OrderPlaced, name=name)(function)
    return shipping.handlers[0], FakeHost(ContextMap([orders, shipping]))


async def test_subscription_carries_name_and_types() -> None:
    """The subscription has the handler's durable name and event types."""

    def handler(event: OrderPlaced) -> None:
        pass

    spec, host = setup(handler)
    subscription = subscription_for(spec, host)
    assert subscription.name == "shipping.ship_on_order_placed"
    assert subscription.event_types == (OrderPlaced,)
    assert subscription.accepts(placed())


async def test_sync_handler_runs_in_a_worker_thread() -> None:
    """A sync handler runs off the event-loop thread and opens no transaction it does not use."""
    seen: list[int] = []

    def handler(event: OrderPlaced) -> None:
        seen.append(threading.get_ident())

    spec, host = setup(handler)
    await subscription_for(spec, host).handle(placed())
    assert seen
    assert seen[0] != threading.get_ident()
    assert host.outcomes == []


async def test_sync_handler_context_fields() -> None:
    """The context names the handler, its bounded context, the event and the attempt."""
    contexts: list[HandlerContext] = []

    def handler(event: OrderPlaced, ctx: HandlerContext) -> None:
        contexts.append(ctx)

    spec, host = setup(handler)
    event = placed()
    await subscription_for(spec, host).handle(event)
    (ctx,) = contexts
    assert (ctx.handler_name, ctx.context, ctx.event, ctx.attempt) == (
        "shipping.ship_on_order_placed",
        "shipping",
        event,
        1,
    )


async def test_session_and_follow_ups_share_one_committed_transaction() -> None:
    """Follow-ups go to the handler's own session, stamped as caused, and it commits on return."""
    sessions: list[Session] = []

    def handler(event: OrderPlaced, ctx: HandlerContext) -> None:
        sessions.append(ctx.session)
        ctx.publish(shipped())
        sessions.append(ctx.session)

    spec, host = setup(handler)
    event = placed()
    await subscription_for(spec, host).handle(event)
    assert host.outcomes == ["commit"]
    ((target, (follow_up,), context),) = host.published
    assert sessions == [target, target]
    assert context == "shipping"
    assert follow_up.causation_id == event.event_id
    assert follow_up.correlation_id == event.event_id


async def test_failing_handler_rolls_back_its_transaction() -> None:
    """A handler that raises after publishing rolls its transaction back and the error propagates."""

    def handler(event: OrderPlaced, ctx: HandlerContext) -> None:
        ctx.publish(shipped())
        raise RuntimeError("label printer on fire")

    spec, host = setup(handler)
    with pytest.raises(RuntimeError, match="on fire"):
        await subscription_for(spec, host).handle(placed())
    assert host.outcomes == ["rollback"]


async def test_follow_up_must_be_owned_by_the_handlers_context() -> None:
    """Publishing another context's event from a handler raises OwnershipError and rolls back."""

    def handler(event: OrderPlaced, ctx: HandlerContext) -> None:
        ctx.session  # noqa: B018  # opens the transaction
        ctx.publish(placed())

    spec, host = setup(handler)
    with pytest.raises(OwnershipError) as caught:
        await subscription_for(spec, host).handle(placed())
    assert (caught.value.context, caught.value.owner) == ("shipping", "orders")
    assert host.outcomes == ["rollback"]
    assert host.published == []


async def test_attempt_counts_retries_of_one_event() -> None:
    """Each redelivery of a failing event increments attempt; a new event starts at 1."""
    attempts: list[int] = []

    def handler(event: OrderPlaced, ctx: HandlerContext) -> None:
        attempts.append(ctx.attempt)
        if len(attempts) < 3:
            raise RuntimeError("try again")

    spec, host = setup(handler)
    subscription, event = subscription_for(spec, host), placed()
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await subscription.handle(event)
    await subscription.handle(event)
    await subscription.handle(placed())
    assert attempts == [1, 2, 3, 1]


async def test_structlog_contextvars_are_bound_while_the_handler_runs() -> None:
    """event_id, event_type, context, correlation_id and handler are bound, then unbound."""
    bound: list[dict[str, Any]] = []

    def handler(event: OrderPlaced) -> None:
        bound.append(get_contextvars())

    spec, host = setup(handler)
    event = placed()
    await subscription_for(spec, host).handle(event)
    assert bound == [
        {
            "event_id": str(event.event_id),
            "event_type": "orders.OrderPlaced",
            "context": "shipping",
            "correlation_id": str(event.event_id),
            "handler": "shipping.ship_on_order_placed",
        }
    ]
    assert get_contextvars() == {}


async def test_middlewares_wrap_in_order_inside_the_log_binding() -> None:
    """The first middleware is outermost, and middlewares see the bound log context."""
    calls: list[str] = []

    def tracing(label: str) -> Any:
        def middleware(handle: Handler) -> Handler:
            async def wrapped(event: DomainEvent) -> None:
                calls.append(f"{label}:{get_contextvars().get('handler')}")
                await handle(event)
                calls.append(f"/{label}")

            return wrapped

        return middleware

    def handler(event: OrderPlaced) -> None:
        calls.append("handler")

    spec, host = setup(handler)
    subscription = subscription_for(spec, host, [tracing("outer"), tracing("inner")])
    await subscription.handle(placed())
    name = "shipping.ship_on_order_placed"
    assert calls == [f"outer:{name}", f"inner:{name}", "handler", "/inner", "/outer"]


async def test_async_handler_runs_on_the_loop_without_a_session() -> None:
    """An async handler runs on the loop thread; asking for a sync session raises HandlerError."""
    threads: list[int] = []

    async def handler(event: OrderPlaced, ctx: HandlerContext) -> None:
        threads.append(threading.get_ident())
        with pytest.raises(HandlerError, match="async"):
            ctx.session  # noqa: B018

    spec, host = setup(handler)
    await subscription_for(spec, host).handle(placed())
    assert threads == [threading.get_ident()]
    assert host.outcomes == []


async def test_async_handler_follow_ups_are_written_after_it_returns() -> None:
    """An async handler's follow-ups are written in a transaction of their own once it returns."""
    outcomes_during: list[list[str]] = []

    async def handler(event: OrderPlaced, ctx: HandlerContext) -> None:
        ctx.publish(shipped())
        outcomes_during.append(list(host.outcomes))

    spec, host = setup(handler)
    event = placed()
    await subscription_for(spec, host).handle(event)
    assert outcomes_during == [[]]
    assert host.outcomes == ["commit"]
    ((_, (follow_up,), context),) = host.published
    assert (context, follow_up.causation_id) == ("shipping", event.event_id)


async def test_async_handler_that_raises_publishes_nothing() -> None:
    """Buffered follow-ups of an async handler that raises are dropped."""

    async def handler(event: OrderPlaced, ctx: HandlerContext) -> None:
        ctx.publish(shipped())
        raise RuntimeError("boom")

    spec, host = setup(handler)
    with pytest.raises(RuntimeError):
        await subscription_for(spec, host).handle(placed())
    assert host.outcomes == []
    assert host.published == []


async def test_async_handler_without_context_gets_the_event() -> None:
    """An async handler with one parameter is awaited with the event only."""
    received: list[DomainEvent] = []

    async def handler(event: OrderPlaced) -> None:
        received.append(event)

    spec, host = setup(handler)
    event = placed()
    await subscription_for(spec, host).handle(event)
    assert received == [event]


async def test_current_handler_is_set_in_sync_and_async_handlers() -> None:
    """current_handler() names the running handler, in its worker thread too, and None outside."""
    seen: list[str | None] = []

    def sync_handler(event: OrderPlaced) -> None:
        seen.append(current_handler())

    async def async_handler(event: OrderPlaced) -> None:
        seen.append(current_handler())

    for function, name in ((sync_handler, "sync_one"), (async_handler, "async_one")):
        spec, host = setup(function, name=name)
        await subscription_for(spec, host).handle(placed())
    assert seen == ["shipping.sync_one", "shipping.async_one"]
    assert current_handler() is None
