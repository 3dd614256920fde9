"""The consumer runner applies each event once per handler, with the inbox, upcasting and follow-ups."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select

from app.observe import HandlerLog
from engine.codec import encode
from outbox.table import outbox
from tests.broker.runner_conftest import (
    CALLS,
    ParcelBooked,
    ParcelNoted,
    applied_counts,
    applied_table,
    booked,
    consumer_settings,
    courier_app,
    engine_of,
    produce,
    raw,
    runner_running,
)
from tests.kafka_broker import outbox_rows, relay_running, wait_for

if TYPE_CHECKING:
    from outbox.bundled_broker import BundledBroker

pytestmark = [pytest.mark.anyio, pytest.mark.broker]


async def test_each_handler_applies_each_event_once(
    database_url: str, kafka_broker: BundledBroker, topic_prefix: str
) -> None:
    """Every ParcelBooked reaches both courier handlers once; v1 is upcast, other types pass by, follow-ups commit with the inbox rows."""
    bootstrap, topic = kafka_broker.bootstrap_servers, f"{topic_prefix}depot"
    events = [booked(n) for n in range(150)]
    old = encode(booked(1000))  # re-shaped below into a version 1 record
    v1_headers = [(k, b"1" if k == "ce_dataversion" else v) for k, v in old.headers]
    records = [raw(event) for event in events[:75]]
    records += [
        raw(ParcelNoted(aggregate_id="note", n=1, source="depot")),
        (old.key, json.dumps({"n": 1000, "weight_kg": 2}).encode(), v1_headers),
    ]
    records += [raw(event) for event in events[75:]]
    ids = {str(e.event_id) for e in events} | {str(old.event_id)}
    with courier_app(database_url, bootstrap, topic_prefix) as seam:
        engine = engine_of(seam)
        async with runner_running(seam, consumer_settings(topic_prefix)) as runner:
            await produce(bootstrap, topic, records)
            await wait_for(
                lambda: set(applied_counts(engine)) == ids, message="record_parcel applied all"
            )
            # the counters follow each commit, so they may trail the rows for a moment
            await wait_for(
                lambda: {s.applied for s in runner.stats().values()} == {151},
                message="both handlers counted 151 applied",
            )
            await wait_for(
                lambda: runner.stats()["courier.record_parcel"].ignored == 1,
                message="ParcelNoted passed by",
            )
            stats = runner.stats()
        with engine.connect() as connection:
            follow_ups = connection.execute(select(outbox.c.type)).scalars().all()
            grams = connection.execute(
                select(applied_table.c.weight_grams).where(applied_table.c.n == 1000)
            ).scalar_one()
        counts = applied_counts(engine)
    assert set(counts.values()) == {1}
    assert all(CALLS["tally"][event.event_id] == 1 for event in events)
    assert stats["courier.record_parcel"].applied == stats["courier.tally_parcel"].applied == 151
    assert follow_ups == ["tests.runner.CourierAssigned"] * 151
    assert grams == 2000  # upcast from weight_kg=2


async def test_the_seams_middlewares_wrap_handlers_consumed_from_kafka(
    database_url: str, kafka_broker: BundledBroker, topic_prefix: str
) -> None:
    """A middleware given to the EventSeam sees every call the runner makes, sync and async
    handlers alike, as it does on the bus: detaching a context does not drop it."""
    bootstrap, topic = kafka_broker.bootstrap_servers, f"{topic_prefix}depot"
    events = [booked(n) for n in range(40)]
    log = HandlerLog()
    with courier_app(database_url, bootstrap, topic_prefix, [log.middleware]) as seam:
        async with runner_running(seam, consumer_settings(topic_prefix)) as runner:
            await produce(bootstrap, topic, [raw(event) for event in events])
            await wait_for(
                lambda: {s.applied for s in runner.stats().values()} == {len(events)},
                message="both handlers applied every event",
            )
    for event in events:
        ran = sorted(run.handler for run in log.of(event.event_id))
        assert ran == ["courier.record_parcel", "courier.tally_parcel"]
        assert all(run.ok for run in log.of(event.event_id))


async def test_redelivered_events_are_skipped_by_the_inbox(
    database_url: str, kafka_broker: BundledBroker, topic_prefix: str
) -> None:
    """A fresh consumer group and duplicate records deliver everything again, and the inbox applies nothing twice."""
    bootstrap, topic = kafka_broker.bootstrap_servers, f"{topic_prefix}depot"
    records = [raw(booked(n)) for n in range(60)]
    await produce(bootstrap, topic, records)
    with courier_app(database_url, bootstrap, topic_prefix) as seam:
        engine = engine_of(seam)
        async with runner_running(seam, consumer_settings(topic_prefix)) as first:
            await wait_for(lambda: len(applied_counts(engine)) == 60, message="first pass applied")
            await wait_for(
                lambda: first.stats()["courier.tally_parcel"].applied == 60, message="first tally"
            )
        await produce(bootstrap, topic, records[:20])  # a relay re-sent a batch after a crash
        again = consumer_settings(topic_prefix, group_prefix=f"{topic_prefix}again.")
        async with runner_running(seam, again) as runner:
            await wait_for(
                lambda: runner.stats()["courier.record_parcel"].skipped == 80,
                message="all redelivered",
            )
            await wait_for(
                lambda: runner.stats()["courier.tally_parcel"].skipped == 80,
                message="tally redelivered",
            )
            applied = {name: stats.applied for name, stats in runner.stats().items()}
        counts = applied_counts(engine)
    assert len(counts) == 60
    assert set(counts.values()) == {1}
    assert applied == {"courier.record_parcel": 0, "courier.tally_parcel": 0}


@pytest.mark.postgres
async def test_events_relayed_from_the_outbox_are_applied(
    postgres_url: str, kafka_broker: BundledBroker, topic_prefix: str
) -> None:
    """Events the monolith publishes in broker mode travel outbox -> relay -> Kafka -> runner and are applied once, follow-ups included."""
    bootstrap = kafka_broker.bootstrap_servers
    with courier_app(postgres_url, bootstrap, topic_prefix) as seam:
        engine = engine_of(seam)
        async with runner_running(seam, consumer_settings(topic_prefix)) as runner:
            with seam.transaction() as unit:
                events = [ParcelBooked(aggregate_id=f"parcel-{n % 5}", n=n) for n in range(40)]
                unit.publish(*events)
            async with relay_running(seam.settings):
                await wait_for(
                    lambda: len(applied_counts(engine)) == 40, message="relayed and applied"
                )
                await wait_for(lambda: not outbox_rows(engine), message="follow-ups relayed too")
            await wait_for(
                lambda: runner.stats()["courier.record_parcel"].applied >= 40,
                message="the counter followed the commits",
            )
            stats = runner.stats()["courier.record_parcel"]
        counts = applied_counts(engine)
    assert set(counts) == {str(event.event_id) for event in events}
    assert set(counts.values()) == {1}
    assert stats.applied == 40
