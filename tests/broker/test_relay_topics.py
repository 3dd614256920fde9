"""Topics are created explicitly with their settings; differences are reported; idempotence is negotiated."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from structlog.testing import capture_logs

from engine.settings import KafkaSettings, TopicSettings
from outbox.errors import PublishError
from outbox.kafka import KafkaPublisher
from outbox.murmur2 import key_hash
from tests.kafka_broker import (
    create_outbox,
    item,
    outbox_rows,
    partition_count,
    read_topic,
    relay_running,
    relay_settings,
    wait_for,
    write_events,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from outbox.bundled_broker import BundledBroker

pytestmark = [pytest.mark.anyio, pytest.mark.broker]


async def topic_retention(bootstrap: str, topic: str) -> str | None:
    """The topic's retention.ms config as the broker reports it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    entries = {entry[0]: entry[1] for resource in response.resources for entry in resource[4]}
    return entries.get("retention.ms")


async def test_relay_creates_configured_topics_at_start(
    sqlite_url: str, kafka_broker: BundledBroker, topic_prefix: str
) -> None:
    """At start the relay creates each relayed context's topic with its partitions and retention.ms."""
    settings = relay_settings(sqlite_url, kafka_broker.bootstrap_servers, topic_prefix)
    settings = settings.model_copy(
        update={"topics": {"orders": TopicSettings(partitions=5, retention_ms=3_600_000)}}
    )
    create_outbox(sqlite_url).dispose()
    async with relay_running(settings):
        assert await partition_count(kafka_broker.bootstrap_servers, f"{topic_prefix}orders") == 5
        assert (
            await partition_count(kafka_broker.bootstrap_servers, f"{topic_prefix}payments") == 6
        )  # TopicSettings defaults
        assert (
            await topic_retention(kafka_broker.bootstrap_servers, f"{topic_prefix}orders")
            == "3600000"
        )


async def test_existing_topic_that_differs_is_used_with_a_warning(
    outbox_db: Engine, kafka_broker: BundledBroker, topic_prefix: str
) -> None:
    """A topic that exists with other partitions logs the TopicMismatchError message and is used with its real partition count."""
    topic = f"{topic_prefix}orders"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 2, 1)])
    await admin.close()
    write_events(outbox_db, [item(f"a{n}", n) for n in range(12)])
    settings = relay_settings(
        outbox_db.url.render_as_string(hide_password=False),
        kafka_broker.bootstrap_servers,
        topic_prefix,
        partitions=3,
    )
    with capture_logs() as logs:
        async with relay_running(settings):
            await wait_for(lambda: not outbox_rows(outbox_db), message="outbox drained")
    warnings = [entry for entry in logs if entry["event"] == "topics.mismatch"]
    assert warnings
    assert "2 partitions instead of 3" in warnings[0]["message"]
    assert warnings[0]["message"].startswith(
        f"topic {topic!r} exists but differs from its settings"
    )
    records = await read_topic(kafka_broker.bootstrap_servers, topic, expected=12)
    assert all(record.partition == key_hash(record.key or b"") % 2 for record in records)


async def test_idempotence_auto_falls_back_and_on_refuses(kafka_broker: BundledBroker) -> None:
    """enable_idempotence=auto falls back with a warning on a broker that refuses it; on raises PublishError."""
    auto = KafkaPublisher(
        KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers, enable_idempotence="auto")
    )
    with capture_logs() as logs:
        await auto.start()
    try:
        assert auto.idempotent is False
        assert any(entry["event"] == "kafka.idempotence_refused" for entry in logs)
    finally:
        await auto.aclose()
    strict = KafkaPublisher(
        KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers, enable_idempotence="on")
    )
    with pytest.raises(PublishError):
        await strict.start()
    await strict.aclose()
