"""In-memory bus: one long-lived worker per subscription, per-aggregate order, retries, dead letters.

    bus = Bus(subscriptions, settings.bus)
    async with bus.running():
        await bus.publish(OrderPlaced(aggregate_id="o-1", ...))
        await bus.join()

Contract:

* ``publish`` hands each event to every subscription whose types accept it and returns; it
  awaits only when a handler's buffer holds ``buffer_size`` events (backpressure). A handler that
  raises never fails the publisher or the other handlers.
* Each subscription has one worker task fed by a buffer it takes whole; it applies events one at a time, so a
  handler is never called concurrently with itself. No task is spawned per event.
* Order: events of one aggregate reach a handler in publish order. When a handler fails on an
  event of aggregate A, the event is *parked*: it is retried with exponential backoff and jitter
  (``max_attempts``, ``backoff_initial``, ``backoff_max``) while later A-events for that handler
  wait behind it and events of other aggregates keep flowing. When the attempts run out the event
  becomes a dead letter and the waiting A-events continue (order is kept; the poisoned event is
  skipped to the dead-letter store, like Watermill's poison queue). Parked events do not count
  against ``buffer_size``; their number is bounded by the publish rate times the retry time.
* ``aclose`` stops accepting events, drains for up to ``drain_timeout`` (retries included), then
  stops the workers; whatever is still undelivered becomes a dead letter with reason "shutdown",
  so nothing is dropped silently. ``redeliver`` replays a dead letter.
* Every method must be called on the event-loop thread that runs the bus (other threads go
  through the SyncBridge).
"""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Literal

import anyio
import structlog

from .bus_worker import IN_WORKER, SubscriptionWorker
from .dead_letters import DeadLetterStore, InMemoryDeadLetterStore
from .errors import BridgeError, BusClosedError, HandlerError
from .retry import RetryPolicy
from .settings import BusSettings

if TYPE_CHECKING:
    import uuid
    from collections.abc import AsyncIterator, Iterable

    from anyio.abc import TaskStatus

    from .events import DomainEvent
    from .types import Subscription

_log = structlog.get_logger()

_State = Literal["new", "running", "closing", "closed"]


class Bus:
    """The in-memory event bus. See the module docstring for the delivery contract.

    Single use: ``run`` once (with ``TaskGroup.start`` or ``running()``), then ``aclose``.
    """

    def __init__(
        self,
        subscriptions: Iterable[Subscription],
        settings: BusSettings | None = None,
        dead_letters: DeadLetterStore | None = None,
    ) -> None:
        self._settings = settings if settings is not None else BusSettings()
        self._store: DeadLetterStore = (
            dead_letters if dead_letters is not None else InMemoryDeadLetterStore()
        )
        policy = RetryPolicy.from_settings(self._settings)
        self._workers: dict[str, SubscriptionWorker] = {}
        for subscription in subscriptions:
            if subscription.name in self._workers:
                raise HandlerError(
                    f"two subscriptions share the durable name {subscription.name!r}"
                )
            self._workers[subscription.name] = SubscriptionWorker(subscription, policy, self._store)
        self._routes: dict[type[DomainEvent], tuple[SubscriptionWorker, ...]] = {}
        self._limit = self._settings.buffer_size
        self._state: _State = "new"
        self._accepting = False
        self._thread: int | None = None
        self._stop: anyio.Event | None = None
        self._stopped: anyio.Event | None = None

    @property
    def dead_letters(self) -> DeadLetterStore:
        """The store of events that handlers failed on, or that shutdown left undelivered."""
        return self._store

    @property
    def settings(self) -> BusSettings:
        """The settings this bus was built with."""
        return self._settings

    @property
    def subscriptions(self) -> list[Subscription]:
        """The subscriptions this bus dispatches to, one worker each."""
        return [worker.subscription for worker in self._workers.values()]

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run one worker per subscription until ``aclose``; start it with ``TaskGroup.start``.

        After ``aclose`` it drains for up to ``drain_timeout``, then stops the workers. Cancelling
        ``run`` stops the bus at once. Either way undelivered events become "shutdown" letters.
        """
        self._check_runnable()
        self._stop, self._stopped = anyio.Event(), anyio.Event()
        self._thread = threading.get_ident()
        try:
            async with anyio.create_task_group() as group:
                for worker in self._workers.values():
                    group.start_soon(worker.run, name=f"eventseam.bus:{worker.name}")
                self._state, self._accepting = "running", True
                task_status.started()
                await self._stop.wait()
                with anyio.move_on_after(self._settings.drain_timeout):
                    await self.join()
                group.cancel_scope.cancel()
        finally:
            self._shut_down()

    def _check_runnable(self) -> None:
        if self._state != "new":
            raise BusClosedError(f"this bus is {self._state}; a Bus runs only once")

    def _shut_down(self) -> None:
        self._state, self._accepting = "closed", False
        error = BusClosedError(
            f"the bus shut down before delivery (drain_timeout={self._settings.drain_timeout}s)"
        )
        shelved = sum(worker.shelve_leftovers(error) for worker in self._workers.values())
        for worker in self._workers.values():
            worker.release_waiters()
        if shelved:
            _log.error("bus.shutdown_dead_lettered", count=shelved)
        assert self._stopped is not None
        self._stopped.set()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Bus]:
        """Run the bus in a task group for the duration of the block; ``aclose`` on exit."""
        self._check_runnable()
        async with anyio.create_task_group() as group:
            await group.start(self.run)
            try:
                yield self
            finally:
                await self.aclose()

    async def publish(self, *events: DomainEvent) -> None:
        """Hand ``events`` to every accepting subscription, in order.

        Awaits only while a handler's buffer is full, except when called from a handler: its
        follow-up events never wait (they may exceed ``buffer_size``), so a handler cannot
        deadlock on its own buffer. Raises BusClosedError when the bus is not running (also for
        the rest of ``events`` when it closes while this call waits for room).
        """
        if not self._accepting:
            raise self._closed_error()
        try:
            (event,) = events  # the common case, without a len() call
        except ValueError:
            await self._publish_many(events)
            return
        workers = self._routes.get(type(event))
        if workers is None:
            workers = self._route(type(event))
        limit = self._limit
        for worker in workers:
            buffer = worker.buffer
            if len(buffer) >= limit:
                buffer = await self._wait_for_room(worker)
            buffer.append(event)
            if worker.wake is not None:
                worker.wake_up()

    async def _publish_many(self, events: tuple[DomainEvent, ...]) -> None:
        """Hand a batch over handler by handler, in chunks that fit each buffer."""
        kinds = set(map(type, events))
        for worker in self._workers.values():
            chosen = worker.select(events, kinds)
            start = 0
            while start < len(chosen):
                room = self._limit - len(worker.buffer)
                if room <= 0:
                    if not IN_WORKER.get():
                        await self._wait_for_room(worker)
                        continue
                    room = len(chosen)  # a handler's follow-ups never wait (see publish)
                worker.extend(chosen[start : start + room])
                start += room

    def publish_nowait(self, *events: DomainEvent) -> None:
        """Hand ``events`` to every accepting subscription without blocking and without dropping.

        Buffers may grow beyond ``buffer_size`` (publishers using ``publish`` then wait until they
        shrink). Must be called on the event-loop thread (BridgeError otherwise); raises
        BusClosedError when the bus is not running.
        """
        if not self._accepting:
            raise self._closed_error()
        if threading.get_ident() != self._thread:
            raise BridgeError(
                "Bus.publish_nowait must be called on the event-loop thread; use the SyncBridge"
            )
        if len(events) == 1:
            workers = self._routes.get(type(events[0]))
            if workers is None:
                workers = self._route(type(events[0]))
            for worker in workers:
                worker.extend(events)
        else:
            kinds = set(map(type, events))
            for worker in self._workers.values():
                worker.extend(worker.select(events, kinds))

    def _route(self, event_type: type[DomainEvent]) -> tuple[SubscriptionWorker, ...]:
        workers = tuple(w for w in self._workers.values() if w.accepts(event_type))
        self._routes[event_type] = workers
        return workers

    async def _wait_for_room(self, worker: SubscriptionWorker) -> list[DomainEvent]:
        """Wait until ``worker`` takes its buffer; return the (new) buffer to append to.

        Inside a worker (a handler publishing follow-ups) it never waits: the handler could be
        waiting on its own buffer, or on a peer waiting on it.
        """
        if IN_WORKER.get():
            return worker.buffer
        while len(worker.buffer) >= self._limit and self._accepting:
            if worker.space is None:
                worker.space = anyio.Event()
            await worker.space.wait()
        if not self._accepting:
            raise self._closed_error()
        return worker.buffer

    def _closed_error(self) -> BusClosedError:
        if self._state == "new":
            return BusClosedError("the bus is not running yet; start Bus.run first")
        return BusClosedError(f"the bus is {self._state} and accepts no more events")

    async def join(self) -> None:
        """Return when every event published so far has been handled or dead-lettered.

        Events published meanwhile are waited for too. Returns at once when the bus is not running.
        Not for handlers: a handler's own worker is busy running it, so it would wait until
        shutdown.
        """
        waited = True
        while waited:  # a handler may feed a worker already passed: repeat until a quiet pass
            waited = False
            for worker in self._workers.values():
                while self._state in ("running", "closing") and not worker.is_idle():
                    waited = True
                    if worker.idle is None:
                        worker.idle = anyio.Event()
                    await worker.idle.wait()

    async def aclose(self) -> None:
        """Stop accepting, let ``run`` drain for up to ``drain_timeout``, wait until it stopped.

        Idempotent. Whatever is undelivered at the timeout becomes a dead letter with reason
        "shutdown". Called from a handler it only requests the close (waiting would deadlock);
        cancelling the caller does not cancel the drain.
        """
        if self._state == "new":
            self._state = "closed"
            return
        if self._state == "running":
            self._state, self._accepting = "closing", False
            for worker in self._workers.values():
                if worker.space is not None:
                    worker.space.set()
                    worker.space = None
            assert self._stop is not None
            self._stop.set()
        if self._stopped is not None and not IN_WORKER.get():
            await self._stopped.wait()

    async def redeliver(self, dead_letter_id: uuid.UUID) -> None:
        """Hand a dead letter's event back to its handler and remove the letter from the store.

        The event queues behind the handler's buffer like a new publish (a failure makes a new
        letter). Raises UnknownDeadLetterError, HandlerError (no such handler on this bus) or
        BusClosedError; the letter stays in the store when it was not handed back.
        """
        if not self._accepting:
            raise self._closed_error()
        handler = self._store.get(dead_letter_id).handler
        worker = self._workers.get(handler)
        if worker is None:
            raise HandlerError(
                f"dead letter {dead_letter_id} belongs to handler {handler!r}, not on this bus"
            )
        letter = self._store.remove(dead_letter_id)
        try:
            buffer = worker.buffer
            if len(buffer) >= self._limit:
                buffer = await self._wait_for_room(worker)
        except BaseException:
            self._store.add(letter)
            raise
        buffer.append(letter.event)
        if worker.wake is not None:
            worker.wake_up()
        _log.info(
            "bus.redelivered",
            dead_letter_id=str(letter.id),
            event_id=str(letter.event.event_id),
            event_type=letter.event.event_name,
            context=worker.name.partition(".")[0],
            correlation_id=str(letter.event.correlation_id or letter.event.event_id),
            handler=worker.name,
        )
