"""The in-memory bus: delivery, isolation, retries, dead letters, order, backpressure, shutdown."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import pytest

from engine.bus import Bus
from engine.dead_letters import InMemoryDeadLetterStore
from engine.errors import BridgeError, BusClosedError, HandlerError, UnknownDeadLetterError
from engine.events import DomainEvent
from engine.settings import BusSettings
from engine.types import Subscription

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

pytestmark = pytest.mark.anyio

FAST = BusSettings(max_attempts=3, backoff_initial=0.001, backoff_max=0.002, drain_timeout=5.0)


class Numbered(DomainEvent):
    """Abstract base of the test events: a sequence number per aggregate."""

    n: int


class ItemAdded(Numbered, name="tests.bus.ItemAdded", version=1):
    pass


class ItemRemoved(Numbered, name="tests.bus.ItemRemoved", version=1):
    pass


def added(aggregate: str, n: int) -> ItemAdded:
    return ItemAdded(aggregate_id=aggregate, n=n)


@dataclass
class Recorder:
    """A handler that records what it applied; ``fail`` decides whether an attempt raises."""

    fail: Callable[[Numbered, int], bool] = lambda event, attempt: False
    before: Callable[[Numbered], Awaitable[None]] | None = None
    applied: list[Numbered] = field(default_factory=list)
    attempts: dict[object, int] = field(default_factory=lambda: defaultdict(int))

    async def __call__(self, event: DomainEvent) -> None:
        assert isinstance(event, Numbered)
        self.attempts[event.event_id] += 1
        if self.before is not None:
            await self.before(event)
        if self.fail(event, self.attempts[event.event_id]):
            raise ValueError(f"boom on {event.aggregate_id}")
        self.applied.append(event)

    def numbers(self, aggregate: str | None = None) -> list[int]:
        return [e.n for e in self.applied if aggregate in (None, e.aggregate_id)]


def n_of(event: DomainEvent) -> int:
    assert isinstance(event, Numbered)
    return event.n


def sub(name: str, handler: Recorder, *types: type[DomainEvent]) -> Subscription:
    return Subscription(name=name, event_types=types or (ItemAdded,), handle=handler)


async def test_publish_delivers_to_every_accepting_handler() -> None:
    """Each event reaches exactly the handlers whose type filter accepts it, in publish order."""
    adds, removes, both, base = Recorder(), Recorder(), Recorder(), Recorder()
    subscriptions = [
        sub("adds", adds),
        sub("removes", removes, ItemRemoved),
        sub("both", both, ItemAdded, ItemRemoved),
        sub("base", base, Numbered),
    ]
    bus = Bus(subscriptions, FAST)
    async with bus.running():
        await bus.publish(added("a", 1))
        await bus.publish(ItemRemoved(aggregate_id="a", n=2))
        await bus.publish(added("a", 3), ItemRemoved(aggregate_id="b", n=4), added("b", 5))
        bus.publish_nowait(ItemRemoved(aggregate_id="c", n=6), added("c", 7))
        await bus.join()
    assert adds.numbers() == [1, 3, 5, 7]
    assert removes.numbers() == [2, 4, 6]
    assert both.numbers() == base.numbers() == [1, 2, 3, 4, 5, 6, 7]


async def test_failing_handler_never_affects_the_publisher_or_other_handlers() -> None:
    """A handler that always raises leaves the publisher and a sibling handler untouched."""
    broken, healthy = Recorder(fail=lambda event, attempt: True), Recorder()
    bus = Bus([sub("broken", broken), sub("healthy", healthy)], FAST)
    async with bus.running():
        for n in range(20):
            await bus.publish(added(f"agg-{n % 3}", n))
        await bus.join()
    assert healthy.numbers() == list(range(20))
    assert broken.applied == []
    assert bus.dead_letters.count(handler="broken") == 20
    assert bus.dead_letters.count(handler="healthy") == 0


async def test_failure_is_retried_until_it_succeeds() -> None:
    """An event that fails twice and then succeeds is applied once and never dead-lettered."""
    flaky = Recorder(fail=lambda event, attempt: attempt < 3)
    bus = Bus([sub("flaky", flaky)], FAST)
    async with bus.running():
        event = added("a", 1)
        await bus.publish(event)
        await bus.join()
    assert flaky.numbers() == [1]
    assert flaky.attempts[event.event_id] == 3
    assert bus.dead_letters.count() == 0


async def test_exhausted_retries_make_exactly_one_dead_letter() -> None:
    """After max_attempts failures the event becomes one dead letter with the error and attempts."""
    broken = Recorder(fail=lambda event, attempt: True)
    bus = Bus([sub("ctx.broken", broken)], FAST)
    async with bus.running():
        event = added("a", 1)
        await bus.publish(event)
        await bus.join()
    [letter] = bus.dead_letters.list()
    assert broken.attempts[event.event_id] == FAST.max_attempts
    assert (letter.handler, letter.event, letter.attempts, letter.reason) == (
        "ctx.broken",
        event,
        3,
        "failed",
    )
    assert (letter.error_type, letter.error_message) == ("ValueError", "boom on a")
    assert "ValueError: boom on a" in letter.traceback
    assert letter.failed_at.tzinfo is not None


async def test_aggregate_order_holds_under_concurrent_publishers() -> None:
    """Concurrent publishers (single, batched, nowait) under backpressure keep each aggregate's order."""

    async def yield_sometimes(event: Numbered) -> None:
        if event.n % 3 == 0:
            await anyio.lowlevel.checkpoint()

    first, second = Recorder(before=yield_sometimes), Recorder()
    bus = Bus(
        [sub("first", first), sub("second", second)], FAST.model_copy(update={"buffer_size": 4})
    )

    async def single(aggregate: str) -> None:
        for n in range(50):
            await bus.publish(added(aggregate, n))

    async def batched(aggregate: str) -> None:
        for start in range(0, 50, 7):
            await bus.publish(*(added(aggregate, n) for n in range(start, min(start + 7, 50))))

    async def nowait(aggregate: str) -> None:
        for n in range(50):
            bus.publish_nowait(added(aggregate, n))
            await anyio.lowlevel.checkpoint()

    async with bus.running():
        async with anyio.create_task_group() as group:
            for index, publisher in enumerate([single, batched, nowait, single, batched]):
                group.start_soon(publisher, f"agg-{index}")
        await bus.join()
    for recorder in (first, second):
        for index in range(5):
            assert recorder.numbers(f"agg-{index}") == list(range(50))


async def test_retrying_aggregate_waits_while_other_aggregates_flow() -> None:
    """While A's event is retried, later A-events wait behind it and B-events are applied meanwhile."""
    b_done = anyio.Event()

    def fail_a1_until_b_is_done(event: Numbered, attempt: int) -> bool:
        return event.aggregate_id == "A" and event.n == 1 and not b_done.is_set()

    handler = Recorder(fail=fail_a1_until_b_is_done)

    async def mark_b(event: Numbered) -> None:
        if event.aggregate_id == "B" and event.n == 5:
            b_done.set()

    handler.before = mark_b
    # Enough attempts that a handler stalled behind A would dead-letter A1 long before B arrives.
    settings = FAST.model_copy(update={"max_attempts": 1000})
    bus = Bus([sub("h", handler)], settings)
    async with bus.running():
        await bus.publish(added("A", 1))
        await bus.publish(added("A", 2))
        for n in range(1, 6):
            await bus.publish(added("B", n))
        await bus.publish(added("A", 3))
        await bus.join()
    order = [(e.aggregate_id, e.n) for e in handler.applied]
    assert order.index(("B", 5)) < order.index(("A", 1))
    assert handler.numbers("A") == [1, 2, 3]
    assert handler.numbers("B") == [1, 2, 3, 4, 5]
    assert handler.attempts[handler.applied[order.index(("A", 1))].event_id] > 1
    assert bus.dead_letters.count() == 0


async def test_events_behind_a_dead_letter_continue_in_order() -> None:
    """The poisoned event goes to the dead letters first, then its aggregate's later events follow."""
    letters_when_applied: list[int] = []
    store = InMemoryDeadLetterStore()

    async def note_letters(event: Numbered) -> None:
        letters_when_applied.append(store.count())

    handler = Recorder(fail=lambda event, attempt: event.n == 1, before=note_letters)
    bus = Bus([sub("h", handler)], FAST, dead_letters=store)
    async with bus.running():
        await bus.publish(added("A", 1), added("A", 2), added("A", 3))
        await bus.join()
    assert handler.numbers("A") == [2, 3]
    assert [n_of(letter.event) for letter in store.list()] == [1]
    # Three failed attempts on A1 saw no letter yet; A2 and A3 ran after it was recorded.
    assert letters_when_applied == [0, 0, 0, 1, 1]


async def test_publish_waits_while_a_handler_buffer_is_full() -> None:
    """publish awaits when a blocked handler's buffer is full and resumes once it drains."""
    release = anyio.Event()

    async def blocked(event: Numbered) -> None:
        await release.wait()

    handler = Recorder(before=blocked)
    bus = Bus([sub("h", handler)], FAST.model_copy(update={"buffer_size": 2}))
    published = 0

    async def publisher() -> None:
        nonlocal published
        for n in range(10):
            await bus.publish(added("a", n))
            published += 1

    async with bus.running(), anyio.create_task_group() as group:
        group.start_soon(publisher)
        await anyio.wait_all_tasks_blocked()
        # At most one buffer in the worker's hands and one full buffer waiting.
        assert 2 <= published <= 4
        release.set()
    assert published == 10
    assert handler.numbers() == list(range(10))


async def test_publish_nowait_never_blocks_on_a_full_buffer() -> None:
    """publish_nowait accepts events past buffer_size without blocking and loses none of them."""
    release = anyio.Event()

    async def blocked(event: Numbered) -> None:
        await release.wait()

    handler = Recorder(before=blocked)
    bus = Bus([sub("h", handler)], FAST.model_copy(update={"buffer_size": 1}))
    async with bus.running():
        for n in range(10):
            bus.publish_nowait(added("a", n))
        bus.publish_nowait(*(added("a", n) for n in range(10, 20)))
        release.set()
        await bus.join()
    assert handler.numbers() == list(range(20))


async def test_join_waits_for_slow_handlers_and_retries() -> None:
    """join returns only after every event, including one being retried, has been applied."""

    async def slow(event: Numbered) -> None:
        for _ in range(5):
            await anyio.lowlevel.checkpoint()

    handler = Recorder(fail=lambda event, attempt: event.n == 0 and attempt == 1, before=slow)
    bus = Bus([sub("h", handler), sub("h2", Recorder(before=slow))], FAST)
    async with bus.running():
        for n in range(30):
            await bus.publish(added(f"agg-{n % 4}", n))
        await bus.join()
        assert sorted(handler.numbers()) == list(range(30))


async def test_join_returns_at_once_when_nothing_was_published() -> None:
    """join on an idle bus (running or not) returns immediately."""
    bus = Bus([sub("h", Recorder())], FAST)
    await bus.join()
    async with bus.running():
        await bus.join()
    await bus.join()


async def test_aclose_drains_in_flight_events() -> None:
    """aclose without join still applies every event already published."""

    async def slow(event: Numbered) -> None:
        await anyio.lowlevel.checkpoint()

    handler = Recorder(fail=lambda event, attempt: attempt == 1 and event.n % 10 == 0, before=slow)
    bus = Bus([sub("h", handler)], FAST)
    async with anyio.create_task_group() as group:
        await group.start(bus.run)
        for n in range(100):
            await bus.publish(added(f"agg-{n % 7}", n))
        await bus.aclose()
        await bus.aclose()  # idempotent
    assert sorted(handler.numbers()) == list(range(100))
    assert bus.dead_letters.count() == 0


async def test_drain_timeout_turns_undelivered_events_into_shutdown_letters() -> None:
    """Events still undelivered when drain_timeout expires become "shutdown" dead letters in order."""

    async def stuck_on_first(event: Numbered) -> None:
        if event.n == 1:
            await anyio.sleep_forever()

    handler = Recorder(before=stuck_on_first)
    retrying = Recorder(fail=lambda event, attempt: True)
    settings = BusSettings(max_attempts=5, backoff_initial=60, backoff_max=60, drain_timeout=0.05)
    bus = Bus([sub("stuck", handler), sub("retrying", retrying)], settings)
    async with bus.running():
        await bus.publish(added("a", 1), added("b", 2), added("a", 3))
    stuck = bus.dead_letters.list(handler="stuck")
    assert [(n_of(x.event), x.attempts, x.reason) for x in stuck] == [
        (1, 1, "shutdown"),
        (2, 0, "shutdown"),
        (3, 0, "shutdown"),
    ]
    assert stuck[0].error_type == "engine.errors.BusClosedError"
    parked = bus.dead_letters.list(handler="retrying")
    assert [(n_of(x.event), x.attempts, x.reason) for x in parked] == [
        (1, 1, "shutdown"),
        (3, 0, "shutdown"),
        (2, 1, "shutdown"),
    ]
    assert parked[0].error_type == "ValueError"
    assert handler.applied == []


async def test_publish_outside_the_running_window_raises_bus_closed() -> None:
    """publish, publish_nowait and redeliver raise BusClosedError before run and after aclose."""
    bus = Bus([sub("h", Recorder())], FAST)
    with pytest.raises(BusClosedError, match="not running"):
        await bus.publish(added("a", 1))
    async with bus.running():
        await bus.publish(added("a", 1))
    with pytest.raises(BusClosedError, match="closed"):
        await bus.publish(added("a", 2))
    with pytest.raises(BusClosedError):
        bus.publish_nowait(added("a", 2))
    with pytest.raises(BusClosedError):
        async with bus.running():
            pass


async def test_publisher_waiting_for_room_gets_bus_closed_when_the_bus_closes() -> None:
    """A publish blocked on backpressure raises BusClosedError once shutdown begins."""
    settings = BusSettings(buffer_size=1, drain_timeout=0.05)
    bus = Bus([sub("h", Recorder(before=lambda event: anyio.sleep_forever()))], settings)
    outcome: list[BaseException] = []

    async def publisher() -> None:
        try:
            for n in range(10):
                await bus.publish(added("a", n))
        except BusClosedError as exc:
            outcome.append(exc)

    async with bus.running(), anyio.create_task_group() as group:
        group.start_soon(publisher)
        await anyio.wait_all_tasks_blocked()
        await bus.aclose()
    assert len(outcome) == 1
    delivered = bus.dead_letters.count()
    assert 2 <= delivered < 10  # what was handed over is kept as letters, the rest was refused


async def test_redeliver_hands_the_event_back_and_removes_the_letter() -> None:
    """A dead letter replayed after the fault is fixed is applied and leaves the store."""
    broken = True
    handler = Recorder(fail=lambda event, attempt: broken)
    bus = Bus([sub("h", handler)], FAST)
    async with bus.running():
        await bus.publish(added("a", 1))
        await bus.join()
        [letter] = bus.dead_letters.list()
        broken = False
        await bus.redeliver(letter.id)
        assert bus.dead_letters.count() == 0
        await bus.join()
        with pytest.raises(UnknownDeadLetterError):
            await bus.redeliver(letter.id)
    assert handler.numbers() == [1]


async def test_redeliver_of_a_letter_for_an_unknown_handler_keeps_it() -> None:
    """A letter whose handler is not on this bus raises HandlerError and stays in the store."""
    store = InMemoryDeadLetterStore()
    first = Bus([sub("gone", Recorder(fail=lambda event, attempt: True))], FAST, dead_letters=store)
    async with first.running():
        await first.publish(added("a", 1))
    second = Bus([sub("other", Recorder())], FAST, dead_letters=store)
    [letter] = store.list()
    async with second.running():
        with pytest.raises(HandlerError, match="gone"):
            await second.redeliver(letter.id)
    assert store.count() == 1


async def test_publish_nowait_from_another_thread_is_refused() -> None:
    """publish_nowait called off the event-loop thread raises BridgeError instead of corrupting state."""
    bus = Bus([sub("h", Recorder())], FAST)
    async with bus.running():
        with pytest.raises(BridgeError):
            await anyio.to_thread.run_sync(bus.publish_nowait, added("a", 1))


async def test_cancelling_run_dead_letters_whatever_is_pending() -> None:
    """Cancelling the task that runs the bus closes it and keeps pending events as dead letters."""
    bus = Bus([sub("h", Recorder(before=lambda event: anyio.sleep_forever()))], FAST)
    async with anyio.create_task_group() as group:
        await group.start(bus.run)
        await bus.publish(added("a", 1), added("a", 2))
        await anyio.wait_all_tasks_blocked()
        group.cancel_scope.cancel()
    assert [x.reason for x in bus.dead_letters.list()] == ["shutdown", "shutdown"]
    with pytest.raises(BusClosedError):
        await bus.publish(added("a", 3))


async def test_handler_publishing_into_its_own_full_buffer_does_not_deadlock() -> None:
    """Follow-up events published by a handler skip backpressure, so a full own buffer cannot block it."""
    bus: Bus

    async def fan_out(event: Numbered) -> None:
        if isinstance(event, ItemAdded) and event.n < 5:
            follow_ups = [ItemRemoved(aggregate_id="b", n=event.n * 10 + k) for k in range(4)]
            await bus.publish(follow_ups[0])
            await bus.publish(*follow_ups[1:])

    handler = Recorder(before=fan_out)
    bus = Bus([sub("h", handler, Numbered)], FAST.model_copy(update={"buffer_size": 1}))
    with anyio.fail_after(10):
        async with bus.running():
            await bus.publish(*(added("a", n) for n in range(5)))
            await bus.join()
    assert len(handler.applied) == 5 + 20
    assert handler.numbers("b") == [n * 10 + k for n in range(5) for k in range(4)]
    assert bus.dead_letters.count() == 0


async def test_aclose_from_a_handler_requests_shutdown_without_deadlock() -> None:
    """A handler calling aclose closes the bus; the close completes once the handler returns."""
    bus: Bus

    async def close_on_first(event: Numbered) -> None:
        if event.n == 1:
            await bus.aclose()

    handler = Recorder(before=close_on_first)
    bus = Bus([sub("h", handler)], FAST)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            await group.start(bus.run)
            await bus.publish(added("a", 1), added("a", 2))
            await bus.aclose()
    assert handler.numbers() == [1, 2]
    with pytest.raises(BusClosedError):
        await bus.publish(added("a", 3))


def test_duplicate_handler_names_are_rejected() -> None:
    """Two subscriptions with one durable name are a declaration error."""
    with pytest.raises(HandlerError, match="dup"):
        Bus([sub("dup", Recorder()), sub("dup", Recorder())])


def test_default_settings_come_from_bus_settings() -> None:
    """A bus built without settings uses BusSettings defaults and an in-memory store."""
    bus = Bus([])
    assert bus.settings == BusSettings()
    assert bus.dead_letters.count() == 0
    assert math.isclose(bus.settings.backoff_initial, BusSettings().backoff_initial)


async def test_join_waits_for_follow_ups_fed_to_a_worker_already_passed() -> None:
    """join covers events a later handler hands to an earlier handler's worker while it runs."""
    slow_removes = Recorder(before=lambda event: _yield_a_few())
    bus: Bus | None = None

    async def add_then_remove(event: DomainEvent) -> None:
        assert bus is not None
        bus.publish_nowait(ItemRemoved(aggregate_id=event.aggregate_id, n=n_of(event)))

    removal = Subscription(name="removes", event_types=(ItemRemoved,), handle=slow_removes)
    follow_up = Subscription(name="follow_up", event_types=(ItemAdded,), handle=add_then_remove)
    bus = Bus([removal, follow_up], FAST)
    async with bus.running():
        await bus.publish(added("a", 1), added("a", 2))
        await bus.join()
        assert slow_removes.numbers() == [1, 2]


async def _yield_a_few() -> None:
    for _ in range(5):
        await anyio.lowlevel.checkpoint()
