"""Personal data through the real broker: sealed on the wire and in dead letters, opened for
handlers in the consumer runner, and Erased (never a crash, never a dead letter) once shredded."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from sqlalchemy import delete

from engine.crypto_keys import erase_subject
from engine.dead_letter_topic import HANDLER_FAILED, read_dead_letter
from engine.personal_data import ENVELOPE_PREFIX, Erased
from engine.settings import ConsumerSettings, KafkaSettings, RelaySettings, TopicSettings
from outbox.inbox_table import inbox
from tests.broker.runner_conftest import consumer_settings, runner_running
from tests.kafka_broker import read_topic, relay_running, wait_for
from tests.personal_data_world import (
    EMAIL,
    LOCK,
    RECEIVED,
    REJECT,
    PlanChanged,
    crm_seam,
    customer,
    engine_of,
)

if TYPE_CHECKING:
    from engine.runner import ConsumerRunner
    from engine.seam import EventSeam
    from outbox.bundled_broker import BundledBroker

pytestmark = [pytest.mark.anyio, pytest.mark.broker, pytest.mark.postgres]

REMEMBER, REJECTING = "mailing.remember_customer", "mailing.reject_customer"


def received(handler: str) -> list[object]:
    """The emails ``handler`` received so far, in order (a snapshot)."""
    with LOCK:
        return [event.email for event in RECEIVED[handler.removeprefix("mailing.")]]


def runner_settings(prefix: str, generation: str) -> ConsumerSettings:
    """Quick-retry runner settings whose consumer groups are new for each ``generation``."""
    return consumer_settings(f"{prefix}{generation}.", max_attempts=2)


async def run_until_received(
    seam: EventSeam, settings: ConsumerSettings, count: int
) -> ConsumerRunner:
    """Run the mailing handlers until each received (or dead-lettered) ``count`` events."""
    async with runner_running(seam, settings, ["mailing"]) as runner:

        def done() -> bool:
            stats = runner.stats()
            return all(
                len(received(name)) + stats[name].dead_lettered >= count
                for name in (REMEMBER, REJECTING)
            )

        await wait_for(done, message=f"{count} customer events handled")
    return runner


async def test_personal_data_is_sealed_on_the_wire_and_shreddable(
    postgres_url: str, kafka_broker: BundledBroker, topic_prefix: str
) -> None:
    """Raw records and dead letters hold only ciphertext; handlers get plaintext, then Erased after erase."""
    bootstrap = kafka_broker.bootstrap_servers
    seam = crm_seam(
        postgres_url,
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap, enable_idempotence="off", request_timeout_ms=5000
        ),
        relay=RelaySettings(topic_prefix=topic_prefix, poll_interval=0.05, lease_seconds=2.0),
        topics={"crm": TopicSettings(partitions=1)},
    )
    RECEIVED.clear()
    REJECT["on"] = True
    try:
        with seam.transaction() as uow:
            uow.publish(customer("c-1", plan="pro"), customer("c-2", email="bo@shop.test"))
            uow.publish(PlanChanged(aggregate_id="c-1", customer_id="c-1", plan="max"))
        async with relay_running(seam.settings):
            raw = await read_topic(bootstrap, f"{topic_prefix}crm", expected=3)
        assert len(raw) == 3
        for record in raw:  # an independent aiokafka consumer sees no email at all
            assert b"@shop.test" not in (record.value or b"")
            assert all(b"@shop.test" not in value for _, value in record.headers)
        assert sum(f'"{ENVELOPE_PREFIX}.1.'.encode() in (r.value or b"") for r in raw) == 2

        # 1. The runner opens the emails for its handlers; the failing one dead-letters them.
        first = await run_until_received(seam, runner_settings(topic_prefix, "one"), 2)
        assert received(REMEMBER) == [EMAIL, "bo@shop.test"]
        assert first.stats()[REJECTING].dead_lettered == 2
        dead = await read_topic(bootstrap, f"{topic_prefix}dlq.{REJECTING}", expected=2)
        assert len(dead) == 2
        for record in dead:
            assert read_dead_letter(record.headers).reason == HANDLER_FAILED
            assert b"@shop.test" not in (record.value or b"")
            assert f'"email":"{ENVELOPE_PREFIX}.1.'.encode() in (record.value or b"")

        # 2. Erase c-1, forget what was applied, consume every record again from the start.
        with engine_of(seam).begin() as connection:
            assert erase_subject(connection, "c-1") == 1
            connection.execute(delete(inbox))
        RECEIVED.clear()
        REJECT["on"] = False
        again = await run_until_received(seam, runner_settings(topic_prefix, "two"), 2)
        for name in (REMEMBER, REJECTING):
            erased, kept = received(name)
            assert isinstance(erased, Erased)
            assert (erased.subject, erased.field) == ("c-1", "email")
            assert kept == "bo@shop.test"
            stats = again.stats()[name]
            assert (stats.applied, stats.failures, stats.dead_lettered) == (2, 0, 0)
        with LOCK:
            assert RECEIVED["remember_customer"][0].plan == "pro"  # other fields intact
    finally:
        REJECT["on"] = False
        engine_of(seam).dispose()
