"""ConsumerRunner with a fake consumer and dead-letter publisher: batching, isolation, retries, commits, lag."""

from __future__ import annotations

import time
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.orm import sessionmaker
from structlog.contextvars import get_contextvars

from engine.codec import encode
from engine.contexts import BoundedContext
from engine.dead_letter_topic import HANDLER_FAILED, read_dead_letter
from engine.errors import ConsumeError
from engine.events import DomainEvent
from engine.handler_context import current_handler
from engine.modes import Mode
from engine.runner import ConsumerRunner
from engine.seam import EventSeam
from engine.settings import ConsumerSettings, EventSeamSettings, RelaySettings
from outbox.inbox_table import inbox
from outbox.table import metadata
from tests.unit.fake_records import FakeRecord

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
    from pathlib import Path

    from engine.consumer import Partition, RebalanceHooks
    from engine.handler_context import HandlerContext
    from engine.types import Handler, Message, Middleware

pytestmark = pytest.mark.anyio

TOPIC = "unit.hub"


class SpokeTurned(DomainEvent, name="unit.SpokeTurned", version=1):
    """The event the unit runner consumes."""

    n: int
    fail_times: int = 0


hub = BoundedContext("hub", owns=[SpokeTurned])
wheel = BoundedContext("wheel")
handled: list[tuple[int, int]] = []
#: current_handler() as each call of count_spoke saw it.
HANDLING: list[str | None] = []
FAILED: Counter[int] = Counter()


@wheel.handler(SpokeTurned, name="count_spoke")
def count_spoke(event: SpokeTurned, ctx: HandlerContext) -> None:
    """Record (n, attempt); fail the first ``fail_times`` attempts of the event."""
    HANDLING.append(current_handler())
    if FAILED[event.n] < event.fail_times:
        FAILED[event.n] += 1
        raise ValueError(f"spoke {event.n} slipped")
    handled.append((event.n, ctx.attempt))


@dataclass
class FakeConsumer:
    """A GroupConsumer serving queued batches from partition 0 and remembering commits."""

    group_id: str
    batches: list[list[FakeRecord]] = field(default_factory=list)
    commits: list[dict[Partition, int]] = field(default_factory=list)
    hooks: RebalanceHooks | None = None
    closed: bool = False
    fetched: int = 0
    #: While true, every fetch fails as a broker outage would.
    broker_down: bool = False

    async def start(self, hooks: RebalanceHooks) -> None:
        self.hooks = hooks
        await hooks.partitions_assigned({(TOPIC, 0)})

    async def fetch(self, wait: float) -> Sequence[FakeRecord]:
        if self.broker_down:
            await anyio.sleep(0.005)
            raise ConsumeError(self.group_id, "KafkaConnectionError: broker down")
        if self.batches:
            batch = self.batches.pop(0)
            self.fetched = batch[-1].offset + 1
            return batch
        await anyio.sleep(0.005)
        return []

    async def commit(self, offsets: Mapping[Partition, int]) -> bool:
        self.commits.append(dict(offsets))
        return True

    def assignment(self) -> set[Partition]:
        return {(TOPIC, 0)}

    def highwater(self, partition: Partition) -> int | None:
        return 10

    def position(self, partition: Partition) -> int | None:
        return self.fetched

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class FakePublisher:
    """Collects dead-letter records."""

    sent: list[tuple[str, Message]] = field(default_factory=list)

    async def publish(self, topic: str, *messages: Message) -> None:
        self.sent.extend((topic, message) for message in messages)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A SQLite database with the eventseam tables; handler bookkeeping reset."""
    engine = create_engine(f"sqlite:///{tmp_path / 'unit.db'}")
    metadata.create_all(engine)
    handled.clear()
    HANDLING.clear()
    FAILED.clear()
    yield engine
    engine.dispose()


def records(*events: SpokeTurned, start: int = 0) -> list[FakeRecord]:
    """``events`` as consecutive records of partition 0."""
    result = []
    for offset, event in enumerate(events, start):
        encoded = encode(event)
        result.append(FakeRecord(TOPIC, 0, offset, encoded.key, encoded.value, encoded.headers))
    return result


def spoke(n: int, fail_times: int = 0) -> SpokeTurned:
    """A SpokeTurned from hub."""
    return SpokeTurned(aggregate_id=f"s{n}", n=n, fail_times=fail_times, source="hub")


@asynccontextmanager
async def fake_runner(
    seam: EventSeam,
    contexts: list[str],
    batches: list[list[FakeRecord]],
    settings: ConsumerSettings,
    *,
    topics: list[str] | None = None,
) -> AsyncIterator[tuple[ConsumerRunner, list[FakeConsumer], FakePublisher]]:
    """A running ConsumerRunner of ``contexts`` whose consumers each serve ``batches``.

    Dead letters go to a FakePublisher, no topic is created; ``topics``: what every consumer
    must be asked to read (checked). Yields the runner, its consumers and the publisher; the
    runner is stopped on exit.
    """
    consumers: list[FakeConsumer] = []

    def factory(group_id: str, asked: Sequence[str]) -> FakeConsumer:
        if topics is not None:
            assert list(asked) == topics
        consumers.append(FakeConsumer(group_id, list(batches)))
        return consumers[-1]

    async def no_topics(topic: str, context: str) -> None:
        return None

    publisher = FakePublisher()
    runner = ConsumerRunner(
        seam,
        contexts,
        settings=settings,
        consumers=factory,
        dead_letters=publisher,
        create_topics=no_topics,
    )
    async with anyio.create_task_group() as group:
        await group.start(runner.run)
        yield runner, consumers, publisher
        runner.stop()


@asynccontextmanager
async def handler_runner(
    engine: Engine,
    owner: BoundedContext,
    handling: BoundedContext,
    batches: list[list[FakeRecord]],
    settings: ConsumerSettings,
    *,
    topics: list[str] | None = None,
    middlewares: Sequence[Middleware] = (),
) -> AsyncIterator[tuple[ConsumerRunner, FakeConsumer, FakePublisher]]:
    """``fake_runner`` of ``handling``'s handlers on ``engine``, ``owner`` (the context owning
    their events) in broker mode; yields its single FakeConsumer."""
    seam = EventSeam(
        EventSeamSettings(
            relay=RelaySettings(topic_prefix="unit."), contexts={owner.name: Mode.BROKER}
        ),
        [owner, handling],
        session_factory=sessionmaker(engine),
        middlewares=middlewares,
    )
    async with fake_runner(seam, [handling.name], batches, settings, topics=topics) as (
        runner,
        consumers,
        publisher,
    ):
        yield runner, consumers[0], publisher


@asynccontextmanager
async def running(
    engine: Engine,
    batches: list[list[FakeRecord]],
    *,
    middlewares: Sequence[Middleware] = (),
    **overrides: Any,
) -> AsyncIterator[tuple[ConsumerRunner, FakeConsumer, FakePublisher]]:
    """A runner over a FakeConsumer holding ``batches``, its seam's ``middlewares`` around the
    handler; stopped on exit."""
    values: dict[str, Any] = {
        "max_attempts": 3,
        "backoff_initial": 0.001,
        "backoff_max": 0.002,
        **overrides,
    }
    settings = ConsumerSettings(**values)
    async with handler_runner(
        engine, hub, wheel, batches, settings, topics=[TOPIC], middlewares=middlewares
    ) as ran:
        yield ran


async def settle(condition: Any, within: float = 10.0) -> None:
    """Poll ``condition()`` until truthy (fails after ``within`` seconds)."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"not reached: {condition}"
        await anyio.sleep(0.005)


def recorded(engine: Engine) -> int:
    """Inbox rows of wheel.count_spoke."""
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(inbox)).scalar_one())


async def test_batch_is_applied_and_committed_after_handling(engine: Engine) -> None:
    """A clean batch is applied in order, recorded in the inbox and committed past its last offset."""
    async with running(engine, [records(*(spoke(n) for n in range(5)))]) as (runner, consumer, _):
        await settle(lambda: consumer.commits)
        assert runner.stats()["wheel.count_spoke"].applied == 5
    assert handled == [(n, 1) for n in range(5)]
    assert recorded(engine) == 5
    assert consumer.commits == [{(TOPIC, 0): 5}]
    assert consumer.closed


async def test_transient_failure_is_isolated_and_retried(engine: Engine) -> None:
    """A failure inside a batch rolls it back, the events before it run one by one, the failing one succeeds on attempt 2."""
    batch = records(spoke(0), spoke(1), spoke(2, fail_times=1), spoke(3), spoke(4))
    async with running(engine, [batch]) as (runner, consumer, publisher):
        await settle(lambda: consumer.commits)
        stats = runner.stats()["wheel.count_spoke"]
    # 0 and 1 ran in the rolled-back batch, then one by one; 2 failed on attempt 1 in the batch.
    assert handled == [(0, 1), (1, 1), (0, 1), (1, 1), (2, 2), (3, 1), (4, 1)]
    # current_handler() names the handler in batches and one by one, as on the bus
    assert HANDLING == ["wheel.count_spoke"] * 8
    assert (stats.applied, stats.failures, stats.dead_lettered) == (5, 1, 0)
    assert recorded(engine) == 5
    assert not publisher.sent
    assert consumer.commits == [{(TOPIC, 0): 5}]


async def test_poison_event_is_dead_lettered_after_max_attempts(engine: Engine) -> None:
    """An event failing every attempt is tried max_attempts times, dead-lettered once, and its neighbours are applied."""
    batch = records(spoke(0), spoke(1, fail_times=99), spoke(2))
    async with running(engine, [batch], max_attempts=4) as (runner, consumer, publisher):
        await settle(lambda: consumer.commits)
        stats = runner.stats()["wheel.count_spoke"]
    assert FAILED[1] == 4
    assert [n for n, _ in handled] == [0, 0, 2]  # 0 again after the batch rolled back
    assert (stats.applied, stats.dead_lettered) == (2, 1)
    [(topic, message)] = publisher.sent
    info = read_dead_letter(message.headers)
    assert topic == "unit.dlq.wheel.count_spoke"
    assert (info.reason, info.attempts, info.original_offset, info.exception_type) == (
        HANDLER_FAILED,
        4,
        1,
        "ValueError",
    )
    assert message.value == batch[1].value
    assert message.key == batch[1].key
    assert consumer.commits == [{(TOPIC, 0): 3}]


def tracing(name: str, calls: list[tuple[str, str, int]]) -> Middleware:
    """A middleware appending (its name, the bound ``handler`` log id, the event's n) to ``calls``
    before the call; it refuses spoke 13, as a guard would."""

    def middleware(handle: Handler) -> Handler:
        async def traced(event: DomainEvent) -> None:
            assert isinstance(event, SpokeTurned)
            calls.append((name, str(get_contextvars().get("handler")), event.n))
            if event.n == 13:
                raise PermissionError("spoke 13 is not for this wheel")
            await handle(event)

        return traced

    return middleware


async def test_middlewares_wrap_each_call_from_kafka_inside_its_transaction(engine: Engine) -> None:
    """The seam's middlewares run around every consumed event, first one outermost, with the log
    ids bound; one refusing an event fails it like the handler would: retried, dead-lettered,
    nothing of it in the inbox."""
    calls: list[tuple[str, str, int]] = []
    middlewares = [tracing("outer", calls), tracing("inner", calls)]
    batch = records(spoke(0), spoke(1))
    async with running(engine, [batch], middlewares=middlewares) as (_, consumer, publisher):
        await settle(lambda: consumer.commits)
    assert calls == [(m, "wheel.count_spoke", n) for n in (0, 1) for m in ("outer", "inner")]
    assert handled == [(0, 1), (1, 1)]
    calls.clear()
    async with running(engine, [records(spoke(13), start=2)], middlewares=middlewares) as (
        runner,
        consumer,
        publisher,
    ):
        await settle(lambda: consumer.commits)
        stats = runner.stats()["wheel.count_spoke"]
    assert calls == [("outer", "wheel.count_spoke", 13)] * 3  # max_attempts, never the handler
    assert (stats.applied, stats.dead_lettered) == (0, 1)
    [(_, message)] = publisher.sent
    assert read_dead_letter(message.headers).exception_type == "PermissionError"
    assert recorded(engine) == 2  # spokes 0 and 1 only


async def test_stop_during_retry_commits_only_up_to_the_open_record(engine: Engine) -> None:
    """Stopping while an event waits for its retry commits the offsets before it, never past it."""
    batch = records(spoke(0), spoke(1), spoke(2, fail_times=99), spoke(3))
    async with running(engine, [batch], max_attempts=5, backoff_initial=30.0, backoff_max=30.0) as (
        runner,
        consumer,
        _,
    ):
        await settle(lambda: runner.stats()["wheel.count_spoke"].failures == 1)
    assert consumer.commits == [{(TOPIC, 0): 2}]
    assert [n for n, _ in handled] == [0, 1, 0, 1]
    assert recorded(engine) == 2


async def test_redelivered_records_are_skipped(engine: Engine) -> None:
    """The same records delivered twice (two fetches) are applied once; the second time they count as skipped."""
    batch = records(spoke(0), spoke(1))
    again = [
        FakeRecord(r.topic, r.partition, r.offset + 2, r.key, r.value, r.headers) for r in batch
    ]
    async with running(engine, [batch, again]) as (runner, consumer, _):
        # one transaction or two (group commit may join the fetches): the same outcome
        await settle(lambda: consumer.commits and consumer.commits[-1] == {(TOPIC, 0): 4})
        stats = runner.stats()["wheel.count_spoke"]
    assert (stats.applied, stats.skipped) == (2, 2)
    assert handled == [(0, 1), (1, 1)]
    assert consumer.commits[-1] == {(TOPIC, 0): 4}


async def test_lag_counts_records_not_handled(engine: Engine) -> None:
    """lag() is highwater minus the next offset to handle, per assigned partition."""
    async with running(engine, [records(spoke(0), spoke(1), spoke(2))]) as (runner, consumer, _):
        await settle(lambda: consumer.commits)
        assert runner.lag() == {"wheel.count_spoke": {(TOPIC, 0): 7}}


async def test_condition_reports_a_failing_fetch_until_a_fetch_succeeds(engine: Engine) -> None:
    """Running once started; failing fetches name the handler's broker dependency, the next good fetch clears it; stop makes it stopping."""
    async with running(engine, []) as (runner, consumer, _):
        condition = runner.condition
        assert (condition.state, condition.ready) == ("running", True)
        consumer.broker_down = True
        await settle(lambda: not condition.ready)
        assert condition.problems == {
            "broker (wheel.count_spoke)": "ConsumeError: consumer group "
            f"'{consumer.group_id}': KafkaConnectionError: broker down"
        }
        consumer.broker_down = False
        await settle(lambda: condition.ready)
        runner.stop()
        assert condition.state == "stopping"
