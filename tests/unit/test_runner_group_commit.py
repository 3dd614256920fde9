"""ConsumerRunner group commit and batch decode, with a fake consumer: records fetched while a
transaction runs join the next one (within the caps), a malformed record amid a fetch gets its
own dead-letter reason, and a revoke drops what was queued."""

from __future__ import annotations

import itertools
import threading
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from sqlalchemy import Engine, create_engine, func, select

from engine.codec import encode
from engine.contexts import BoundedContext
from engine.dead_letter_topic import read_dead_letter
from engine.events import DomainEvent
from engine.settings import ConsumerSettings
from outbox.inbox_table import inbox
from outbox.table import metadata
from tests.unit.fake_records import FakeRecord
from tests.unit.test_runner_batches import (
    TOPIC,
    FakeConsumer,
    FakePublisher,
    handler_runner,
    settle,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from engine.runner import ConsumerRunner

pytestmark = pytest.mark.anyio


class CraneLifted(DomainEvent, name="unit.CraneLifted", version=1):
    """The event these runner tests consume."""

    n: int


yard = BoundedContext("yard", owns=[CraneLifted])
crane = BoundedContext("crane")
lifted: list[int] = []
#: The handler waits on it for event 0 (a transaction held open while records are fetched).
gate = threading.Event()


@crane.handler(CraneLifted, name="count_lift")
def count_lift(event: CraneLifted) -> None:
    """Record n; hold the transaction of event 0 until ``gate`` is set."""
    if event.n == 0 and not gate.wait(10):
        raise TimeoutError("gate never opened")
    lifted.append(event.n)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A SQLite database with the eventseam tables; the handler's bookkeeping reset."""
    engine = create_engine(f"sqlite:///{tmp_path / 'unit.db'}")
    metadata.create_all(engine)
    lifted.clear()
    gate.clear()
    yield engine
    gate.set()
    engine.dispose()


def fetches(*sizes: int) -> list[list[FakeRecord]]:
    """Consecutive fetches of partition 0 holding ``sizes`` records, events numbered from 0."""
    result, n = [], 0
    for size in sizes:
        batch = []
        for _ in range(size):
            encoded = encode(CraneLifted(aggregate_id=f"c{n}", n=n, source="yard"))
            batch.append(FakeRecord(TOPIC, 0, n, encoded.key, encoded.value, encoded.headers))
            n += 1
        result.append(batch)
    return result


@asynccontextmanager
async def running(
    engine: Engine, batches: list[list[FakeRecord]], **overrides: Any
) -> AsyncIterator[tuple[ConsumerRunner, FakeConsumer, FakePublisher]]:
    """A runner of crane's handler over a FakeConsumer holding ``batches``; stopped on exit."""
    values: dict[str, Any] = {"max_attempts": 2, "backoff_initial": 0.001, **overrides}
    async with handler_runner(engine, yard, crane, batches, ConsumerSettings(**values)) as ran:
        yield ran
        gate.set()


def recorded(engine: Engine) -> int:
    """Inbox rows."""
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(inbox)).scalar_one())


async def test_records_fetched_during_a_transaction_join_the_next_one(engine: Engine) -> None:
    """Two fetches queued while the first transaction runs are applied in ONE transaction."""
    async with running(engine, fetches(1, 2, 2)) as (runner, consumer, _):
        await settle(lambda: not consumer.batches)  # all fetched while event 0 holds its txn
        gate.set()
        await settle(lambda: runner.stats()["crane.count_lift"].applied == 5)
        await settle(lambda: consumer.commits and consumer.commits[-1] == {(TOPIC, 0): 5})
    assert consumer.commits == [{(TOPIC, 0): 1}, {(TOPIC, 0): 5}]  # one commit per transaction
    assert lifted == [0, 1, 2, 3, 4]
    assert recorded(engine) == 5


async def test_a_transaction_holds_at_most_max_batch_records(engine: Engine) -> None:
    """With max_batch_records=2 the fetch loop stops at two waiting records and no transaction
    applies more than two; every record is applied once, in order."""
    async with running(engine, fetches(1, 1, 1, 1, 1, 1), max_batch_records=2) as (
        runner,
        consumer,
        _,
    ):
        await settle(lambda: len(consumer.batches) == 3)  # one in the txn, two waiting
        await anyio.sleep(0.05)
        assert len(consumer.batches) == 3  # the fetch loop waits for room
        gate.set()
        await settle(lambda: runner.stats()["crane.count_lift"].applied == 6)
        await settle(lambda: consumer.commits and consumer.commits[-1] == {(TOPIC, 0): 6})
    offsets = [0] + [commit[(TOPIC, 0)] for commit in consumer.commits]
    assert all(0 < after - before <= 2 for before, after in itertools.pairwise(offsets))
    assert lifted == [0, 1, 2, 3, 4, 5]


async def test_a_malformed_record_amid_a_fetch_is_dead_lettered_with_its_reason(
    engine: Engine,
) -> None:
    """The batch decode falls back for the bad record: it is dead-lettered with schema-mismatch,
    its neighbours are applied once and the offsets are committed past all of them."""
    gate.set()
    (batch,) = fetches(5)
    batch[2] = replace(batch[2], value=b'{"n":"two"}')
    async with running(engine, [batch]) as (runner, consumer, publisher):
        await settle(lambda: consumer.commits and consumer.commits[-1] == {(TOPIC, 0): 5})
        stats = runner.stats()["crane.count_lift"]
    assert (stats.applied, stats.dead_lettered) == (4, 1)
    assert lifted == [0, 1, 3, 4]
    [(topic, message)] = publisher.sent
    info = read_dead_letter(message.headers)
    assert topic == "unit.dlq.crane.count_lift"
    assert (info.reason, info.attempts, info.original_offset) == ("schema-mismatch", 0, 2)
    assert recorded(engine) == 4


async def test_a_revoke_drops_the_queued_batches_and_nothing_is_applied_twice(
    engine: Engine,
) -> None:
    """Batches queued behind a transaction when the partitions are revoked are dropped; fetched
    again after the rebalance, each event is applied once."""
    first, *queued = fetches(1, 2, 2)
    async with running(engine, [first, *queued]) as (runner, consumer, _):
        await settle(lambda: not consumer.batches)
        assert consumer.hooks is not None
        async with anyio.create_task_group() as group:
            group.start_soon(consumer.hooks.partitions_revoked, {(TOPIC, 0)})
            await anyio.sleep(0.02)
            gate.set()  # the revoke waits for the transaction in hand, then forgets the rest
        assert consumer.commits == [{(TOPIC, 0): 1}]
        await anyio.sleep(0.05)
        assert lifted == [0]  # the queued batches were dropped
        consumer.batches.extend(queued)  # re-fetched from the committed offset
        await settle(lambda: runner.stats()["crane.count_lift"].applied == 5)
        await settle(lambda: consumer.commits[-1] == {(TOPIC, 0): 5})
    assert lifted == [0, 1, 2, 3, 4]
    assert recorded(engine) == 5
