"""Status and metrics against the real broker: backlog, lag and dead letters match known counts.

Records reach the topics in multi-record batches (the relay's, and a producer with linger), the
case where the bundled broker's ``end_offsets`` is wrong: the figures must still be exact.
"""

from __future__ import annotations

import functools
import json
import os
from typing import TYPE_CHECKING

import anyio.to_thread
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from click.testing import CliRunner
from prometheus_client import REGISTRY
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from engine import metrics
from engine.cli.status import status as status_command
from engine.seam import EventSeam
from engine.status import collect_status
from tests.broker.runner_conftest import (
    applied_counts,
    booked,
    consumer_settings,
    courier,
    create_tables,
    dead_letter_topic,
    depot,
    engine_of,
    produce,
    raw,
    registry,
    runner_running,
    seam_settings,
)
from tests.kafka_broker import outbox_rows, read_topic, relay_running, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

    from outbox.bundled_broker import BundledBroker

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

RECORD = "courier.record_parcel"
TALLY = "courier.tally_parcel"


def build_seam(database_url: str, bootstrap: str, prefix: str) -> EventSeam:
    """depot and courier (runner_conftest) with consumer groups ``<prefix>g.<handler>``."""
    engine = create_engine(database_url)
    create_tables(engine)
    settings = seam_settings(database_url, bootstrap, prefix).model_copy(
        update={"consumer": consumer_settings(prefix)}
    )
    return EventSeam(
        settings, [depot, courier], registry=registry(), session_factory=sessionmaker(engine)
    )


def status_app() -> EventSeam:
    """Application factory of the CLI test (STATUS_TEST_DATABASE/_BOOTSTRAP/_PREFIX)."""
    environ = os.environ
    return build_seam(
        environ["STATUS_TEST_DATABASE"],
        environ["STATUS_TEST_BOOTSTRAP"],
        environ["STATUS_TEST_PREFIX"],
    )


@pytest.fixture
def seam(database_url: str, kafka_broker: BundledBroker, topic_prefix: str) -> Iterator[EventSeam]:
    """The test application on a fresh database; its engine disposed afterwards."""
    app = build_seam(database_url, kafka_broker.bootstrap_servers, topic_prefix)
    yield app
    engine_of(app).dispose()


async def relay_all(seam: EventSeam, count: int) -> None:
    """Publish ``count`` ParcelBooked and relay them until the outbox is empty."""
    with seam.transaction() as unit:
        unit.publish(*(booked(n) for n in range(count)))
    engine = engine_of(seam)
    async with relay_running(seam.settings):
        await wait_for(lambda: not outbox_rows(engine), message="every row relayed")


async def commit_first(bootstrap: str, topic: str, group: str, total: int, count: int) -> None:
    """Have ``group`` commit offsets covering ``count`` of the topic's ``total`` records."""
    records = await read_topic(bootstrap, topic, expected=total)
    assert len(records) == total
    offsets: dict[TopicPartition, int] = {}
    for record in records[:count]:  # sorted by (partition, offset)
        offsets[TopicPartition(topic, record.partition)] = record.offset + 1
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def test_backlog_lag_and_dead_letters_match_known_counts(
    seam: EventSeam, kafka_broker: BundledBroker, topic_prefix: str
) -> None:
    """N rows written, M relayed, K consumed by one group, D dead letters: backlog N-M, lag M-K (M for a group that never committed), D dead letters."""
    written, relayed, consumed, letters = 30, 20, 7, 3
    bootstrap = kafka_broker.bootstrap_servers
    await relay_all(seam, relayed)
    with seam.transaction() as unit:
        unit.publish(*(booked(1000 + n) for n in range(written - relayed)))
    topic = f"{topic_prefix}depot"
    await commit_first(bootstrap, topic, f"{topic_prefix}g.{RECORD}", relayed, consumed)
    await produce(
        bootstrap,
        dead_letter_topic(topic_prefix),
        [raw(booked(2000 + n, aggregate="dead")) for n in range(letters)],
    )
    report = await collect_status(seam)
    assert report.errors == []
    contexts = {context.name: context for context in report.contexts}
    assert (contexts["depot"].backlog, contexts["courier"].backlog) == (written - relayed, 0)
    handlers = {handler.name: handler for handler in contexts["courier"].handlers}
    assert handlers[RECORD].lag == relayed - consumed
    assert handlers[TALLY].lag == relayed
    assert sum(p.high_watermark for p in handlers[RECORD].partitions) == relayed
    assert {p.topic for p in handlers[RECORD].partitions} == {topic}
    assert (handlers[RECORD].dead_letters, handlers[TALLY].dead_letters) == (letters, 0)
    assert contexts["courier"].dead_letters == letters


async def test_json_output_against_the_broker(
    seam: EventSeam,
    kafka_broker: BundledBroker,
    topic_prefix: str,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``status --json`` reports per-partition lag and the dead-letter topics read from the broker."""
    await relay_all(seam, 12)
    monkeypatch.setenv("STATUS_TEST_DATABASE", database_url)
    monkeypatch.setenv("STATUS_TEST_BOOTSTRAP", kafka_broker.bootstrap_servers)
    monkeypatch.setenv("STATUS_TEST_PREFIX", topic_prefix)
    invoke = functools.partial(
        CliRunner().invoke, status_command, ["--json"], obj={"app_path": f"{__name__}:status_app"}
    )
    result = await anyio.to_thread.run_sync(invoke)  # the command runs its own event loop
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["kafka"] == kafka_broker.bootstrap_servers
    [courier_json] = [context for context in data["contexts"] if context["name"] == "courier"]
    record = next(h for h in courier_json["handlers"] if h["name"] == RECORD)
    assert record["lag"] == 12
    assert [p["partition"] for p in record["partitions"]] == [0, 1, 2]
    assert all(p["committed"] is None for p in record["partitions"])
    assert record["dead_letter_topics"] == [dead_letter_topic(topic_prefix)]
    assert record["dead_letters"] == 0


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    """A sample of the default registry (0 when absent)."""
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def test_relay_and_runner_runs_record_metrics(
    seam: EventSeam, kafka_broker: BundledBroker, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relay run counts published rows and times its rounds; a runner run times each handler call and sets the lag gauges."""
    monkeypatch.setattr(metrics, "LAG_INTERVAL", 0.05)
    published = {"context": "depot", "outcome": "published"}
    record_calls = {"handler": RECORD, "transport": "kafka"}
    before = (
        sample("eventseam_relay_messages_total", published),
        sample("eventseam_relay_batch_duration_seconds_count"),
        sample("eventseam_handler_duration_seconds_count", record_calls),
    )
    await relay_all(seam, 25)
    assert sample("eventseam_relay_messages_total", published) - before[0] == 25
    assert sample("eventseam_relay_batch_duration_seconds_count") > before[1]
    engine = engine_of(seam)
    group = f"{topic_prefix}g.{RECORD}"
    topic = f"{topic_prefix}depot"

    def lags() -> list[float | None]:
        return [
            REGISTRY.get_sample_value(
                "eventseam_consumer_lag_records",
                {"group": group, "topic": topic, "partition": str(number)},
            )
            for number in range(3)
        ]

    async with runner_running(seam, consumer_settings(topic_prefix)):
        await wait_for(lambda: len(applied_counts(engine)) == 25, message="every event applied")
        await wait_for(lambda: lags() == [0.0, 0.0, 0.0], message="lag gauges at 0")
    calls = sample("eventseam_handler_duration_seconds_count", record_calls) - before[2]
    assert calls >= 25
