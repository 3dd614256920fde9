"""Reading topics and consumer-group offsets without joining any group (for parity and the demo).

    async with BrokerView(settings.kafka) as view:
        contents = await view.read("eventseam.orders")       # every record, to the high-water mark
        offsets = await view.committed("eventseam.payments.authorize_payment_on_order_placed",
                                       ["eventseam.orders"])

* ``read`` assigns every partition to a consumer outside any group, reads from the beginning and
  stops once each partition's position reached the high-water mark of the latest fetch (the
  bundled broker's ``end_offsets`` cannot be trusted after multi-record batches). A record is kept
  when its ``ce_id`` header names an event (dead-letter records keep the original headers).
* ``committed`` asks the group's coordinator (OffsetFetch) through a consumer that never
  subscribes, so it never joins or moves the group.
* A topic that does not exist reads as empty; it is never created (metadata requests do not
  auto-create topics). Broker failures raise ConsumeError. aiokafka is imported when used: like
  engine.consumer and outbox.kafka, this module is a Kafka edge of the engine.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .dead_letter_topic import original_headers
from .errors import ConsumeError, SettingsError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .settings import KafkaSettings

Partition = tuple[str, int]
"""A topic partition as ``(topic, partition)``."""

#: How long reading a topic to its high-water mark may take before giving up.
READ_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class TopicRecord:
    """A record on one of the context's topics (or a dead-letter topic)."""

    event_id: uuid.UUID
    event_type: str
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class TopicContents:
    """A topic read to its end: its records (with a ``ce_id``) and the high-water mark per partition."""

    records: list[TopicRecord]
    highwater: dict[Partition, int]


def record_of(
    topic: str, partition: int, offset: int, headers: Sequence[tuple[str, bytes]]
) -> TopicRecord | None:
    """A TopicRecord from a record's CloudEvents headers; None without a valid ``ce_id``."""
    found = dict(original_headers(headers))
    try:
        event_id = uuid.UUID(found["ce_id"].decode())
    except (KeyError, ValueError):
        return None
    event_type = found.get("ce_type", b"").decode(errors="replace")
    return TopicRecord(event_id, event_type, topic, partition, offset)


class BrokerView:
    """KafkaView on a real broker: a consumer outside any group reads, another reads offsets.

    Needs the ``kafka`` extra (aiokafka), imported when the view starts. ``timeout`` bounds the
    read of one topic to its high-water mark.
    """

    def __init__(self, kafka: KafkaSettings, *, timeout: float = READ_TIMEOUT) -> None:
        if not kafka.bootstrap_servers:
            raise SettingsError("parity reads Kafka: set EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS")
        self._kafka, self._timeout = kafka, timeout
        self._admin: Any = None

    async def __aenter__(self) -> BrokerView:
        from outbox.errors import PublishError
        from outbox.kafka import KafkaTopicAdmin

        admin = KafkaTopicAdmin(self._kafka)
        try:
            await admin.start()
        except PublishError as exc:
            await admin.aclose()
            raise ConsumeError("parity", f"the broker is unreachable: {exc}") from exc
        self._admin = admin
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._admin is not None:
            await self._admin.aclose()

    def _options(self) -> dict[str, Any]:
        from outbox.kafka import security_options

        options: dict[str, Any] = {
            "bootstrap_servers": self._kafka.bootstrap_servers,
            "client_id": f"{self._kafka.client_id}-parity",
            "enable_auto_commit": False,
            "request_timeout_ms": self._kafka.request_timeout_ms,
        }
        return options | security_options(self._kafka)

    async def _partitions(self, topic: str) -> int:
        from outbox.errors import PublishError

        try:
            if not await self._admin.exists(topic):
                return 0
            return int((await self._admin.describe(topic)).partitions)
        except PublishError as exc:
            raise ConsumeError("parity", f"cannot describe {topic}: {exc}") from exc

    async def read(self, topic: str) -> TopicContents:
        """Every record of ``topic`` to the high-water mark; ConsumeError after ``timeout``."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        count = await self._partitions(topic)
        if not count:
            return TopicContents([], {})
        consumer = AIOKafkaConsumer(fetch_max_wait_ms=50, **self._options())
        await consumer.start()
        records: list[TopicRecord] = []
        try:
            assigned = [TopicPartition(topic, number) for number in range(count)]
            consumer.assign(assigned)
            await consumer.seek_to_beginning(*assigned)
            ends = await self._drain(consumer, assigned, records)
        finally:
            await consumer.stop()
        return TopicContents(records, ends)

    async def _drain(
        self, consumer: Any, assigned: list[Any], records: list[TopicRecord]
    ) -> dict[Partition, int]:
        deadline = time.monotonic() + self._timeout
        ends: dict[Partition, int] = {}
        while len(ends) < len(assigned):
            if time.monotonic() > deadline:
                raise ConsumeError(
                    "parity", f"{assigned[0].topic} not read to its end within {self._timeout:g} s"
                )
            batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for batch in batches.values():
                for r in batch:
                    record = record_of(r.topic, r.partition, r.offset, list(r.headers))
                    if record is not None:
                        records.append(record)
            for tp in assigned:
                end = consumer.highwater(tp)
                if end is not None and await consumer.position(tp) >= end:
                    ends[(tp.topic, tp.partition)] = int(end)
        return ends

    async def committed(self, group: str, topics: Sequence[str]) -> dict[Partition, int]:
        """Offsets ``group`` committed on every partition of ``topics`` (none: not listed)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        wanted: list[Partition] = []
        for topic in topics:
            wanted.extend((topic, n) for n in range(await self._partitions(topic)))
        if not wanted:
            return {}
        consumer = AIOKafkaConsumer(group_id=group, **self._options())
        await consumer.start()
        try:
            found: dict[Partition, int] = {}
            for topic, partition in wanted:
                offset = await consumer.committed(TopicPartition(topic, partition))
                if offset is not None and offset >= 0:
                    found[(topic, partition)] = int(offset)
            return found
        finally:
            await consumer.stop()
