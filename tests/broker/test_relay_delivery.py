"""The relay delivers committed outbox rows to the broker: content, order, late commits, partitions."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select

from engine.modes import Mode
from outbox.murmur2 import key_hash
from outbox.table import Status, outbox
from tests.kafka_broker import (
    Record,
    item,
    outbox_rows,
    partition_count,
    produce_confluent,
    read_topic,
    read_topic_confluent,
    relay_running,
    relay_settings,
    wait_for,
    write_events,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from outbox.bundled_broker import BundledBroker

pytestmark = [pytest.mark.anyio, pytest.mark.broker]


def url_of(engine: Engine) -> str:
    """The engine's URL with its password (the relay connects on its own)."""
    return engine.url.render_as_string(hide_password=False)


def numbers_by_key(records: list[Record]) -> dict[bytes, list[int]]:
    """Event numbers per key, in topic order (partition offset order)."""
    found: dict[bytes, list[int]] = defaultdict(list)
    for record in records:
        assert record.key is not None
        found[record.key].append(json.loads(record.value)["n"])
    return found


async def test_delivers_rows_with_key_value_and_cloudevents_headers(
    outbox_db: Engine, kafka_broker: BundledBroker, topic_prefix: str
) -> None:
    """Every committed row reaches its topic once, keyed by aggregate, with its stored headers, and leaves the outbox."""
    events = [item(f"order-{n % 7}", n) for n in range(60)]
    written = write_events(outbox_db, events)
    settings = relay_settings(url_of(outbox_db), kafka_broker.bootstrap_servers, topic_prefix)
    async with relay_running(settings):
        await wait_for(lambda: not outbox_rows(outbox_db), message="outbox drained")
    records = await read_topic(kafka_broker.bootstrap_servers, f"{topic_prefix}orders", expected=60)
    assert len(records) == 60
    by_id = {record.header("ce_id"): record for record in records}
    for encoded in written:
        record = by_id[str(encoded.event_id).encode()]
        assert record.key == encoded.key
        assert record.value == encoded.value
        assert record.headers == encoded.headers
        assert record.header("ce_type") == b"tests.broker.ItemAdded"
        assert record.header("ce_source") == b"orders"
        assert record.partition == key_hash(encoded.key) % 3


async def test_rows_whose_headers_an_earlier_build_stored_as_json_are_delivered_as_written(
    outbox_db: Engine, kafka_broker: BundledBroker, topic_prefix: str
) -> None:
    """Headers stored as JSON (before they were stored in Kafka's wire form) reach the topic
    unchanged, in order with the rows around them; the JSON rows are re-encoded, not parked."""
    events = [item("order-1", n) for n in range(10)]
    written = write_events(outbox_db, events)
    with outbox_db.begin() as connection:
        for encoded in written[::2]:
            old = json.dumps([[k, v.decode("latin-1")] for k, v in encoded.headers]).encode()
            connection.execute(
                outbox.update().where(outbox.c.id == encoded.event_id).values(headers=old)
            )
        stored = connection.execute(select(outbox.c.headers).order_by(outbox.c.seq)).scalars()
        assert [blob[:1] == b"[" for blob in stored] == [True, False] * 5
    settings = relay_settings(url_of(outbox_db), kafka_broker.bootstrap_servers, topic_prefix)
    async with relay_running(settings):
        await wait_for(lambda: not outbox_rows(outbox_db), message="outbox drained")
    records = await read_topic(kafka_broker.bootstrap_servers, f"{topic_prefix}orders", expected=10)
    assert [json.loads(record.value)["n"] for record in records] == list(range(10))
    assert [record.headers for record in records] == [encoded.headers for encoded in written]


async def test_keeps_per_aggregate_order_across_rounds(
    outbox_db: Engine, kafka_broker: BundledBroker, topic_prefix: str
) -> None:
    """Events of one aggregate arrive in write order even when they span many small claim rounds."""
    for batch in range(10):
        write_events(outbox_db, [item(f"cart-{n % 13}", batch * 40 + n) for n in range(40)])
    settings = relay_settings(
        url_of(outbox_db), kafka_broker.bootstrap_servers, topic_prefix, batch_size=37
    )
    async with relay_running(settings):
        await wait_for(lambda: not outbox_rows(outbox_db), message="outbox drained")
    records = await read_topic(
        kafka_broker.bootstrap_servers, f"{topic_prefix}orders", expected=400
    )
    assert len(records) == 400
    for numbers in numbers_by_key(records).values():
        assert numbers == sorted(numbers)


@pytest.mark.postgres
async def test_late_commit_is_still_delivered(
    postgres_outbox: Engine, kafka_broker: BundledBroker, topic_prefix: str
) -> None:
    """A transaction that commits after rows with a larger seq were published is still relayed."""
    settings = relay_settings(url_of(postgres_outbox), kafka_broker.bootstrap_servers, topic_prefix)
    async with relay_running(settings):
        with postgres_outbox.connect() as slow:
            transaction = slow.begin()
            early = write_events(slow, [item("slow-order", 1)])
            write_events(postgres_outbox, [item("fast-order", 2)])
            await wait_for(
                lambda: len(outbox_rows(postgres_outbox)) == 0, message="fast row published"
            )
            transaction.commit()
        await wait_for(lambda: not outbox_rows(postgres_outbox), message="late row published")
    records = await read_topic(kafka_broker.bootstrap_servers, f"{topic_prefix}orders", expected=2)
    assert {record.header("ce_id") for record in records} >= {str(early[0].event_id).encode()}
    assert len(records) == 2


async def test_partitions_match_librdkafka_murmur2_random(
    outbox_db: Engine, kafka_broker: BundledBroker, topic_prefix: str
) -> None:
    """The relay puts each key on the partition librdkafka's murmur2_random (Java's default) picks, as read back by confluent-kafka."""
    keys = [f"customer-{n}" for n in range(40)]
    write_events(outbox_db, [item(key, n) for n, key in enumerate(keys)])
    settings = relay_settings(
        url_of(outbox_db), kafka_broker.bootstrap_servers, topic_prefix, partitions=5
    )
    async with relay_running(settings):
        await wait_for(lambda: not outbox_rows(outbox_db), message="outbox drained")
    topic = f"{topic_prefix}orders"
    records = read_topic_confluent(kafka_broker.bootstrap_servers, topic, partitions=5, expected=40)
    assert sorted(record.key or b"" for record in records) == sorted(key.encode() for key in keys)
    probe_topic = f"{topic_prefix}payments"  # created by the relay at start, 5 partitions too
    assert await partition_count(kafka_broker.bootstrap_servers, probe_topic) == 5
    placed = produce_confluent(
        kafka_broker.bootstrap_servers, probe_topic, [key.encode() for key in keys]
    )
    assert {record.key: record.partition for record in records} == placed


async def test_local_rows_are_not_relayed(
    outbox_db: Engine, kafka_broker: BundledBroker, topic_prefix: str
) -> None:
    """Rows written in local mode stay in the outbox (for retention) and never reach the broker."""
    write_events(outbox_db, [item("quiet", 1, context="payments")], mode=Mode.LOCAL)
    write_events(outbox_db, [item("loud", 2, context="payments")])
    settings = relay_settings(url_of(outbox_db), kafka_broker.bootstrap_servers, topic_prefix)
    async with relay_running(settings):
        await wait_for(
            lambda: [row.status for row in outbox_rows(outbox_db)] == [Status.LOCAL],
            message="pending row sent",
        )
    records = await read_topic(
        kafka_broker.bootstrap_servers, f"{topic_prefix}payments", expected=1
    )
    assert [record.key for record in records] == [b"loud"]
