"""The bus's worker for one subscription: its buffer, per-aggregate parking, retries, dead letters.

engine.bus.Bus owns one SubscriptionWorker per subscription and routes published events to them;
the delivery contract (order, retries, backpressure, shutdown) is in engine.bus's docstring.
A worker is used from the event-loop thread that runs the bus only.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from contextvars import ContextVar
from typing import TYPE_CHECKING

import anyio
import structlog
from structlog.contextvars import bound_contextvars

from . import metrics
from .dead_letters import DeadLetter

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .dead_letters import DeadLetterStore
    from .errors import BusClosedError
    from .events import DomainEvent
    from .retry import RetryPolicy
    from .types import Subscription

_log = structlog.get_logger()

IN_WORKER: ContextVar[bool] = ContextVar("eventseam_bus_in_worker", default=False)
"""True inside bus worker tasks (and tasks their handlers start): publish never waits there."""

_Retry = tuple[float, int, str]
"""A scheduled retry: (due time, tie-breaker, aggregate id)."""


class SubscriptionWorker:
    """The long-lived task of one subscription: drains its buffer, parks failing aggregates.

    ``wake`` is set while the worker sleeps (a publisher sets it and clears the slot), ``space``
    while a publisher waits for room and ``idle`` while ``join`` waits for the worker.
    """

    __slots__ = (
        "buffer",
        "event_types",
        "failures",
        "handle",
        "idle",
        "interrupted",
        "name",
        "parked",
        "policy",
        "retries",
        "sequence",
        "space",
        "store",
        "subscription",
        "unapplied",
        "wake",
    )

    def __init__(
        self, subscription: Subscription, policy: RetryPolicy, store: DeadLetterStore
    ) -> None:
        self.subscription = subscription
        self.name = subscription.name
        self.event_types = subscription.event_types
        self.handle = subscription.handle
        self.policy = policy
        self.store = store
        self.buffer: list[DomainEvent] = []
        self.wake: anyio.Event | None = None
        self.space: anyio.Event | None = None
        self.idle: anyio.Event | None = None
        self.parked: dict[str, deque[DomainEvent]] = {}
        self.failures: dict[str, tuple[int, Exception]] = {}
        self.retries: list[_Retry] = []
        self.sequence = itertools.count()
        self.interrupted: DomainEvent | None = None
        self.unapplied: list[DomainEvent] = []

    def accepts(self, event_type: type[DomainEvent]) -> bool:
        """True when the subscription's type filter accepts events of ``event_type``."""
        return issubclass(event_type, self.event_types)

    def select(
        self, events: tuple[DomainEvent, ...], kinds: set[type[DomainEvent]]
    ) -> Sequence[DomainEvent]:
        """The events this worker accepts, in order (``kinds`` are the events' types)."""
        accepted = {kind for kind in kinds if self.accepts(kind)}
        if len(accepted) == len(kinds):
            return events
        return [event for event in events if type(event) in accepted] if accepted else ()

    def extend(self, events: Sequence[DomainEvent]) -> None:
        """Append ``events`` to the buffer, waking the worker if it sleeps (never blocks)."""
        if events:
            self.buffer.extend(events)
            if self.wake is not None:
                self.wake_up()

    def wake_up(self) -> None:
        """Wake the sleeping worker (its ``wake`` is not None)."""
        wake, self.wake = self.wake, None
        if wake is not None:
            wake.set()

    def is_idle(self) -> bool:
        """True when the worker sleeps with nothing buffered, parked or in hand."""
        return self.wake is not None and not self.buffer and not self.parked

    async def run(self) -> None:
        """Apply events until cancelled: due retries first, then the buffer, else sleep."""
        IN_WORKER.set(True)
        retries = self.retries
        while True:
            if retries and retries[0][0] <= anyio.current_time():
                _, _, aggregate = heapq.heappop(retries)
                await self._deliver_parked(aggregate)
            elif self.buffer:
                batch, self.buffer = self.buffer, []
                if self.space is not None:
                    self.space.set()
                    self.space = None
                await self._apply(batch)
            else:
                await self._sleep()

    async def _apply(self, batch: list[DomainEvent]) -> None:
        """Apply a batch taken from the buffer, without a checkpoint between events (hot path).

        Events of a parked aggregate join its parked queue. When the worker is cancelled, the
        event in flight and the rest of the batch are kept for the shutdown dead letters.
        """
        handle, parked = self.handle, self.parked
        events = iter(batch)
        for event in events:
            if parked and event.aggregate_id in parked:
                parked[event.aggregate_id].append(event)
                continue
            try:
                await handle(event)
            except Exception as exc:
                self._first_failure(event, exc)
            except BaseException:
                self.interrupted, self.unapplied = event, list(events)
                raise

    async def _sleep(self) -> None:
        """Wait for a publisher, or for the next retry to fall due."""
        wake = self.wake = anyio.Event()
        if self.idle is not None and not self.parked:
            self.idle.set()
            self.idle = None
        if self.retries:
            with anyio.move_on_after(self.retries[0][0] - anyio.current_time()):
                await wake.wait()
        else:
            await wake.wait()
        self.wake = None

    def _first_failure(self, event: DomainEvent, exc: Exception) -> None:
        aggregate = event.aggregate_id
        self.parked[aggregate] = deque((event,))
        if not self._fail(aggregate, event, 1, exc):
            del self.parked[aggregate]

    async def _deliver_parked(self, aggregate: str) -> None:
        """Retry the head of ``aggregate``'s parked events, then apply the rest in order.

        Stops at the next failure, which is scheduled for retry and keeps the rest parked.
        """
        queue = self.parked[aggregate]
        attempts = self.failures[aggregate][0]
        while queue:
            event = queue[0]
            attempts += 1
            try:  # retries bind ``attempt``; first attempts (the hot path) bind nothing
                with bound_contextvars(attempt=attempts):
                    await self.handle(event)
            except Exception as exc:
                if self._fail(aggregate, event, attempts, exc):
                    return
            else:
                queue.popleft()
                self.failures.pop(aggregate, None)
            attempts = 0
        del self.parked[aggregate]

    def _fail(self, aggregate: str, event: DomainEvent, attempts: int, exc: Exception) -> bool:
        """Schedule a retry of the parked head (True), or dead-letter and unpark it (False)."""
        fields = {
            "event_id": str(event.event_id),
            "event_type": event.event_name,
            "context": self.name.partition(".")[0],  # durable names are "<context>.<name>"
            "correlation_id": str(event.correlation_id or event.event_id),
            "handler": self.name,
        }
        if self.policy.should_retry(attempts):
            delay = self.policy.delay(attempts)
            self.failures[aggregate] = (attempts, exc)
            heapq.heappush(
                self.retries, (anyio.current_time() + delay, next(self.sequence), aggregate)
            )
            _log.warning(
                "bus.handler_failed",
                **fields,
                attempt=attempts,
                retry_in=round(delay, 4),
                error=repr(exc),
            )
            return True
        self.failures.pop(aggregate, None)
        self.parked[aggregate].popleft()
        letter = DeadLetter.from_error(self.name, event, exc, attempts)
        self.store.add(letter)
        metrics.record_dead_letter(self.name, metrics.BUS, "failed")
        _log.error(
            "bus.dead_lettered",
            **fields,
            attempt=attempts,
            dead_letter_id=str(letter.id),
            exc_info=exc,
        )
        return False

    def shelve_leftovers(self, error: BusClosedError) -> int:
        """After the worker stopped: dead-letter everything undelivered, per aggregate in order."""
        letters: list[DeadLetter] = []
        if self.interrupted is not None:
            letters.append(DeadLetter.from_error(self.name, self.interrupted, error, 1, "shutdown"))
        for aggregate, queue in self.parked.items():
            attempts, last_error = self.failures.get(aggregate, (0, error))
            for event in queue:
                letters.append(
                    DeadLetter.from_error(self.name, event, last_error, attempts, "shutdown")
                )
                attempts, last_error = 0, error
        for events in (self.unapplied, self.buffer):
            letters.extend(
                DeadLetter.from_error(self.name, e, error, 0, "shutdown") for e in events
            )
        self.interrupted = None
        self.unapplied = []
        self.parked.clear()
        self.failures.clear()
        self.retries.clear()
        self.buffer.clear()
        for letter in letters:
            self.store.add(letter)
        metrics.record_dead_letter(self.name, metrics.BUS, "shutdown", len(letters))
        return len(letters)

    def release_waiters(self) -> None:
        """Wake publishers waiting for room and callers of join (the worker has stopped)."""
        for waiter in (self.space, self.idle):
            if waiter is not None:
                waiter.set()
        self.space = self.idle = None
