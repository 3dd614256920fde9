"""A killed worker and a rebalance between two workers lose nothing and apply nothing twice."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
import pytest

from engine.runner import ConsumerRunner
from tests.broker.runner_conftest import (
    DELAY,
    applied_counts,
    booked,
    committed_offset,
    consumer_settings,
    courier_app,
    engine_of,
    inbox_counts,
    produce,
    raw,
    worker_environment,
    worker_process,
)
from tests.kafka_broker import wait_for

if TYPE_CHECKING:
    from outbox.bundled_broker import BundledBroker

pytestmark = [pytest.mark.anyio, pytest.mark.broker, pytest.mark.postgres]

REPO = Path(__file__).resolve().parents[2]
HANDLERS = {"courier.record_parcel", "courier.tally_parcel"}


async def test_killed_worker_restarts_without_loss_or_double_apply(
    postgres_url: str, kafka_broker: BundledBroker, topic_prefix: str, tmp_path: Path
) -> None:
    """A worker SIGKILLed mid-stream and restarted applies every event exactly once, and a SIGTERM then exits 0 with offsets committed."""
    bootstrap, topic = kafka_broker.bootstrap_servers, f"{topic_prefix}depot"
    environment = worker_environment(postgres_url, bootstrap, topic_prefix)
    log = tmp_path / "worker.log"
    events = [booked(n) for n in range(400)]
    with courier_app(postgres_url, bootstrap, topic_prefix) as seam:
        engine = engine_of(seam)
        with worker_process(environment, log) as first:
            per_partition = await produce(bootstrap, topic, [raw(event) for event in events])
            await wait_for(
                lambda: len(applied_counts(engine)) >= 80,
                message=f"first worker progressed; see {log}",
            )
            first.send_signal(signal.SIGKILL)
            first.wait(30)
        assert len(applied_counts(engine)) < 400, "the kill should land mid-stream"
        with worker_process(environment, log) as second:
            await wait_for(
                lambda: len(applied_counts(engine)) == 400,
                timeout=90,
                message=f"restart caught up; see {log}",
            )
            await wait_for(
                lambda: (
                    set(inbox_counts(engine).values()) == {400}
                    and set(inbox_counts(engine)) == HANDLERS
                ),
                message="tally caught up",
            )
            second.send_signal(signal.SIGTERM)
            await anyio.to_thread.run_sync(second.wait, 60)
        counts = applied_counts(engine)
    assert second.returncode == 0, log.read_text()
    assert set(counts) == {str(event.event_id) for event in events}
    assert set(counts.values()) == {1}
    for partition, count in per_partition.items():
        for handler in sorted(HANDLERS):
            assert (
                await committed_offset(bootstrap, f"{topic_prefix}g.{handler}", topic, partition)
                == count
            )


async def test_rebalance_between_two_workers_loses_nothing(
    postgres_url: str, kafka_broker: BundledBroker, topic_prefix: str
) -> None:
    """A second worker joining and the first one leaving mid-stream rebalance the group with every event applied exactly once."""
    bootstrap, topic = kafka_broker.bootstrap_servers, f"{topic_prefix}depot"
    settings = consumer_settings(topic_prefix)
    events = [booked(n) for n in range(600)]
    DELAY["seconds"] = 0.003
    try:
        with courier_app(postgres_url, bootstrap, topic_prefix) as seam:
            engine = engine_of(seam)
            first, second = (ConsumerRunner(seam, ["courier"], settings=settings) for _ in range(2))
            async with anyio.create_task_group() as group:
                await group.start(first.run)
                await produce(bootstrap, topic, [raw(event) for event in events])
                await wait_for(
                    lambda: len(applied_counts(engine)) >= 100, message="first worker progressed"
                )
                await group.start(second.run)
                await wait_for(
                    lambda: second.workers[0].consumer.assignment(),
                    message="second worker got partitions",
                )
                assert len(applied_counts(engine)) < 600, "the rebalance should happen mid-stream"
                first.stop()
                await wait_for(
                    lambda: len(second.workers[0].consumer.assignment()) == 3,
                    message="first worker left",
                )
                await wait_for(
                    lambda: len(applied_counts(engine)) == 600, timeout=90, message="all applied"
                )
                await wait_for(
                    lambda: inbox_counts(engine) == dict.fromkeys(HANDLERS, 600),
                    message="tally caught up",
                )
                second.stop()
            counts = applied_counts(engine)
    finally:
        DELAY["seconds"] = 0.0
    assert set(counts) == {str(event.event_id) for event in events}
    assert set(counts.values()) == {1}
