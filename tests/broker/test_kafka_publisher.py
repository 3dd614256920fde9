"""KafkaPublisher as an engine.types.Publisher: publish() waits for acks and keeps per-key partitions."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from engine.settings import KafkaSettings
from engine.types import Message, Publisher
from outbox.errors import PermanentPublishError
from outbox.kafka import KafkaPublisher
from outbox.murmur2 import key_hash
from tests.kafka_broker import read_topic

if TYPE_CHECKING:
    from outbox.bundled_broker import BundledBroker

pytestmark = [pytest.mark.anyio, pytest.mark.broker]


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create ``topic`` with ``partitions`` partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def test_publish_sends_every_message_to_its_key_partition(
    kafka_broker: BundledBroker, topic_prefix: str
) -> None:
    """publish() returns after the broker acknowledged every message, each on murmur2(key) % partitions, headers intact."""
    topic = f"{topic_prefix}direct"
    await create_topic(kafka_broker.bootstrap_servers, topic, 4)
    publisher = KafkaPublisher(
        KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers, enable_idempotence="off")
    )
    assert isinstance(publisher, Publisher)
    await publisher.start()
    try:
        messages = [
            Message(f"k{n % 9}".encode(), f"v{n}".encode(), [("ce_id", str(n).encode())])
            for n in range(50)
        ]
        await publisher.publish(topic, *messages)
    finally:
        await publisher.aclose()
    records = await read_topic(kafka_broker.bootstrap_servers, topic, expected=50)
    assert len(records) == 50
    for record in records:
        assert record.partition == key_hash(record.key or b"") % 4
        assert record.header("ce_id") == record.value[1:]


async def test_publish_refuses_a_record_over_max_request_size(
    kafka_broker: BundledBroker, topic_prefix: str
) -> None:
    """A message larger than max_request_size raises PermanentPublishError (not retriable)."""
    topic = f"{topic_prefix}direct"
    await create_topic(kafka_broker.bootstrap_servers, topic, 1)
    settings = KafkaSettings(
        bootstrap_servers=kafka_broker.bootstrap_servers,
        enable_idempotence="off",
        max_request_size=1024,
    )
    publisher = KafkaPublisher(settings)
    await publisher.start()
    try:
        with pytest.raises(PermanentPublishError) as raised:
            await publisher.publish(topic, Message(b"k", b"x" * 4096, []))
        assert raised.value.retriable is False
    finally:
        await publisher.aclose()
