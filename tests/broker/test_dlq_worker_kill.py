"""A worker killed between a dead-letter ack and its offset commit does not dead-letter twice.

Reliability item 6: the worker SIGKILLs itself at a crash point of the consumer runner
(outbox/crash_points.py: right after the dead-letter record's ack, or right after its mark),
before the offset past the poison record is committed. A restarted worker gets the poison
record again; the dead-letter marks (engine.dead_letter_marks) keep it at one record.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

import anyio.to_thread
import pytest

from engine.dead_letter_topic import read_dead_letter
from outbox.crash_points import CONSUMER_POINTS
from tests.broker.runner_conftest import (
    applied_counts,
    booked,
    committed_offset,
    courier_app,
    dead_letter_topic,
    engine_of,
    produce,
    raw,
    worker_environment,
    worker_process,
)
from tests.kafka_broker import read_topic, wait_for

if TYPE_CHECKING:
    from pathlib import Path

    from outbox.bundled_broker import BundledBroker

pytestmark = [pytest.mark.anyio, pytest.mark.broker, pytest.mark.postgres]

HANDLER = "courier.record_parcel"


@pytest.mark.parametrize("point", CONSUMER_POINTS)
async def test_worker_killed_after_dead_lettering_writes_one_record_per_poison_event(
    point: str, postgres_url: str, kafka_broker: BundledBroker, topic_prefix: str, tmp_path: Path
) -> None:
    """Killed at the crash point and restarted: one dead letter per poison event, the partition continues, offsets committed past it."""
    bootstrap, topic = kafka_broker.bootstrap_servers, f"{topic_prefix}depot"
    events = [booked(n, aggregate="same", poison=n in (1, 3)) for n in range(5)]
    healthy = {str(event.event_id) for event in events if not event.poison}
    environment = worker_environment(postgres_url, bootstrap, topic_prefix)
    environment["RUNNER_TEST_DELAY"] = "0"
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    with courier_app(postgres_url, bootstrap, topic_prefix) as seam:
        engine = engine_of(seam)
        crashing = {**environment, "EVENTSEAM_TEST_CRASH_AT": point}
        with worker_process(crashing, first_log) as first:
            await produce(bootstrap, topic, [raw(event) for event in events], partition=0)
            await anyio.to_thread.run_sync(first.wait, 90)
        assert first.returncode == -signal.SIGKILL, first_log.read_text()
        assert len(applied_counts(engine)) < len(healthy), "the kill should land mid-partition"
        with worker_process(environment, second_log) as second:
            await wait_for(
                lambda: set(applied_counts(engine)) == healthy,
                timeout=90,
                message=f"the restarted worker passed both poison records; see {second_log}",
            )
            second.send_signal(signal.SIGTERM)
            await anyio.to_thread.run_sync(second.wait, 60)
        counts = applied_counts(engine)
    assert second.returncode == 0, second_log.read_text()
    assert set(counts.values()) == {1}
    dead = await read_topic(bootstrap, dead_letter_topic(topic_prefix), expected=2)
    letters = sorted(
        (info.handler, info.original_topic, info.original_partition, info.original_offset)
        for info in (read_dead_letter(record.headers) for record in dead)
    )
    assert letters == [(HANDLER, topic, 0, 1), (HANDLER, topic, 0, 3)]
    assert "consumer.dead_letter_on_topic" in second_log.read_text()
    assert await committed_offset(bootstrap, f"{topic_prefix}g.{HANDLER}", topic, 0) == 5
