"""Poison and malformed records go to the handler's dead-letter topic and never stall their partition."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from engine.dead_letter_topic import HANDLER_FAILED, original_headers, read_dead_letter
from tests.broker.runner_conftest import (
    CALLS,
    RawRecord,
    applied_counts,
    booked,
    committed_offset,
    consumer_settings,
    courier_app,
    dead_letter_topic,
    engine_of,
    produce,
    raw,
    runner_running,
)
from tests.kafka_broker import read_topic, wait_for

if TYPE_CHECKING:
    from outbox.bundled_broker import BundledBroker

pytestmark = [pytest.mark.anyio, pytest.mark.broker]


def reshaped(
    record: RawRecord,
    *,
    value: bytes | None = None,
    set_headers: dict[str, bytes] | None = None,
    drop: str = "",
) -> RawRecord:
    """``record`` with another value and/or headers changed or dropped."""
    key, original, headers = record
    changes = set_headers or {}
    headers = [(k, changes.get(k, v)) for k, v in headers if k != drop]
    return key, original if value is None else value, headers


@pytest.mark.postgres
async def test_poison_event_is_dead_lettered_once_after_k_attempts(
    postgres_url: str, kafka_broker: BundledBroker, topic_prefix: str
) -> None:
    """A handler that always raises is tried exactly K times, then one DLQ record carries the error and the partition moves on."""
    bootstrap, topic = kafka_broker.bootstrap_servers, f"{topic_prefix}depot"
    poison = booked(2, aggregate="same", poison=True)
    before, after = (
        [booked(n, aggregate="same") for n in (0, 1)],
        [booked(n, aggregate="same") for n in (3, 4)],
    )
    records = [raw(event) for event in [*before, poison, *after]]
    settings = consumer_settings(topic_prefix, max_attempts=3)
    with courier_app(postgres_url, bootstrap, topic_prefix) as seam:
        engine = engine_of(seam)
        async with runner_running(seam, settings) as runner:
            await produce(bootstrap, topic, records, partition=0)
            await wait_for(lambda: len(applied_counts(engine)) == 4, message="neighbours applied")
            await wait_for(
                lambda: runner.stats()["courier.record_parcel"].dead_lettered == 1,
                message="dead-lettered",
            )
            await wait_for(
                lambda: runner.stats()["courier.tally_parcel"].applied == 5,
                message="tally applied all",
            )
            tally = runner.stats()["courier.tally_parcel"]
        applied = set(applied_counts(engine))
    dead = await read_topic(bootstrap, dead_letter_topic(topic_prefix), expected=1)
    assert CALLS["record"][poison.event_id] == 3
    assert (tally.failures, tally.dead_lettered) == (0, 0)
    assert applied == {str(event.event_id) for event in [*before, *after]}
    assert len(dead) == 1
    info = read_dead_letter(dead[0].headers)
    assert (info.reason, info.handler, info.attempts) == (
        HANDLER_FAILED,
        "courier.record_parcel",
        3,
    )
    assert (info.original_topic, info.original_partition, info.original_offset) == (topic, 0, 2)
    assert info.group == f"{topic_prefix}g.courier.record_parcel"
    assert info.exception_type == "tests.broker.runner_conftest.ParcelRejectedError"
    assert info.exception_message == "parcel 2 is poison"
    assert (dead[0].key, dead[0].value, original_headers(dead[0].headers)) == records[2]
    assert await committed_offset(bootstrap, info.group, topic, 0) == 5


async def test_malformed_records_are_dead_lettered_with_their_reason(
    sqlite_url: str, kafka_broker: BundledBroker, topic_prefix: str
) -> None:
    """Bad JSON, unknown type or version, a missing ce_id and a schema mismatch each reach the DLQ with their reason, between records that are applied."""
    bootstrap, topic = kafka_broker.bootstrap_servers, f"{topic_prefix}depot"
    good = [booked(n, aggregate="mixed") for n in range(3)]
    template = raw(booked(99, aggregate="mixed"))
    malformed = {
        "bad-json": reshaped(template, value=b'{"n": 1,'),
        "unknown-type": reshaped(template, set_headers={"ce_type": b"tests.runner.ParcelLost"}),
        "unknown-version": reshaped(template, set_headers={"ce_dataversion": b"7"}),
        "missing-event-id": reshaped(template, drop="ce_id"),
        "schema-mismatch": reshaped(template, value=json.dumps({"n": "ninety-nine"}).encode()),
    }
    records = [
        raw(good[0]),
        *list(malformed.values())[:2],
        raw(good[1]),
        *list(malformed.values())[2:],
        raw(good[2]),
    ]
    with courier_app(sqlite_url, bootstrap, topic_prefix) as seam:
        engine = engine_of(seam)
        async with runner_running(seam, consumer_settings(topic_prefix)) as runner:
            await produce(bootstrap, topic, records, partition=1)
            await wait_for(lambda: len(applied_counts(engine)) == 3, message="good records applied")
            await wait_for(
                lambda: all(s.dead_lettered == 5 for s in runner.stats().values()),
                message="all dead-lettered",
            )
    dead = await read_topic(bootstrap, dead_letter_topic(topic_prefix), expected=5)
    assert [read_dead_letter(record.headers).reason for record in dead] == list(malformed)
    assert [read_dead_letter(record.headers).original_offset for record in dead] == [1, 2, 4, 5, 6]
    assert all(read_dead_letter(record.headers).attempts == 0 for record in dead)
    assert [(r.key, r.value, original_headers(r.headers)) for r in dead] == list(malformed.values())
    assert (
        await committed_offset(bootstrap, f"{topic_prefix}g.courier.record_parcel", topic, 1) == 8
    )
