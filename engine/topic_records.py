"""Reading whole records (key, value, headers) back from Kafka topics, outside any consumer group.

    async with TopicReader(settings.kafka, purpose="dlq") as reader:
        records = await reader.read("eventseam.dlq.shipping.create_label")   # to the high watermark
        one = await reader.read_one("eventseam.dlq.shipping.create_label", 0, 17)

* ``read`` assigns every partition, reads from the log start and stops once each partition's
  position reached the high watermark of the latest fetch (the bundled broker's ``end_offsets``
  cannot be trusted after multi-record batches). Records come partition by partition, in offset
  order, so one aggregate's records keep their order.
* ``read_one`` fetches the record at one offset; None when the topic, partition or offset does
  not exist.
* ``log_starts`` keeps the log start offset of every partition read so far (records below it
  are gone: retention, or a DeleteRecords request).
* A topic that does not exist reads as empty and is never created (metadata requests do not
  auto-create topics). Broker failures, and reads slower than ``timeout`` seconds, raise
  ConsumeError. aiokafka is imported when the reader starts (the ``kafka`` extra).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConsumeError, SettingsError

if TYPE_CHECKING:
    from .settings import KafkaSettings

#: Seconds reading one topic (or one record) may take before ConsumeError.
READ_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """One record as stored on the broker."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    @property
    def location(self) -> tuple[str, int, int]:
        """``(topic, partition, offset)``."""
        return self.topic, self.partition, self.offset


def _record(raw: Any) -> KafkaRecord:
    return KafkaRecord(
        topic=raw.topic,
        partition=raw.partition,
        offset=raw.offset,
        timestamp=raw.timestamp,
        key=raw.key,
        value=raw.value,
        headers=[(str(k), bytes(v or b"")) for k, v in raw.headers or ()],
    )


class TopicReader:
    """Reads topics of ``kafka`` with one consumer outside any group (see the module docstring)."""

    def __init__(
        self, kafka: KafkaSettings, *, purpose: str = "read", timeout: float = READ_TIMEOUT
    ) -> None:
        if not kafka.bootstrap_servers:
            raise SettingsError(f"{purpose} reads Kafka: set EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS")
        self._kafka, self._purpose, self._timeout = kafka, purpose, timeout
        self._consumer: Any = None
        #: (topic, partition) -> log start offset, for each partition read so far
        self.log_starts: dict[tuple[str, int], int] = {}

    async def __aenter__(self) -> TopicReader:
        from aiokafka import AIOKafkaConsumer
        from aiokafka import errors as kafka_errors

        from outbox.kafka import forbid_auto_create, security_options

        kafka = self._kafka
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers,
            client_id=f"{kafka.client_id}-{self._purpose}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
            request_timeout_ms=kafka.request_timeout_ms,
            **security_options(kafka),
        )
        forbid_auto_create(consumer._client)  # never create a topic by reading it
        try:
            await consumer.start()
        except (kafka_errors.KafkaError, OSError) as exc:
            await consumer.stop()
            raise self._error(f"the broker is unreachable: {exc}") from exc
        self._consumer = consumer
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    def _error(self, reason: str) -> ConsumeError:
        return ConsumeError(self._purpose, reason)

    async def partitions(self, topic: str) -> list[int]:
        """The partition numbers of ``topic`` (empty when it does not exist)."""
        from aiokafka import errors as kafka_errors

        try:
            # The consumer's own metadata covers only its assigned topics once it read one.
            cluster = await self._consumer._client.fetch_all_metadata()
        except (kafka_errors.KafkaError, OSError) as exc:
            raise self._error(f"cannot read the topics: {exc}") from exc
        return sorted(cluster.partitions_for_topic(topic) or ())

    async def read(self, topic: str) -> list[KafkaRecord]:
        """Every record of ``topic`` to the high watermark, partition by partition."""
        from aiokafka import TopicPartition

        numbers = await self.partitions(topic)
        if not numbers:
            return []
        assigned = [TopicPartition(topic, number) for number in numbers]
        found: dict[int, list[KafkaRecord]] = {number: [] for number in numbers}
        await self._fetch(assigned, found, None)
        return [record for number in numbers for record in found[number]]

    async def read_one(self, topic: str, partition: int, offset: int) -> KafkaRecord | None:
        """The record at ``offset`` of ``topic``/``partition``; None when there is none."""
        from aiokafka import TopicPartition

        if partition not in await self.partitions(topic) or offset < 0:
            return None
        tp = TopicPartition(topic, partition)
        found: dict[int, list[KafkaRecord]] = {partition: []}
        await self._fetch([tp], found, offset)
        return next((r for r in found[partition] if r.offset == offset), None)

    async def _fetch(
        self, assigned: list[Any], found: dict[int, list[KafkaRecord]], start: int | None
    ) -> None:
        """Fetch ``assigned`` from ``start`` (else the log start) to the high watermark.

        With ``start``, stops at the first record at or past it.
        """
        from aiokafka import errors as kafka_errors

        consumer = self._consumer
        consumer.assign(assigned)
        deadline = time.monotonic() + self._timeout
        try:
            starts = await consumer.beginning_offsets(assigned)
            self.log_starts.update({(tp.topic, tp.partition): starts[tp] for tp in assigned})
            for tp in assigned:
                consumer.seek(tp, max(start, starts[tp]) if start is not None else starts[tp])
            done: set[Any] = set()
            while len(done) < len(assigned):
                if time.monotonic() > deadline:
                    raise self._error(
                        f"{assigned[0].topic} not read to its end within {self._timeout:g} s"
                    )
                batches = await consumer.getmany(timeout_ms=100, max_records=10_000)
                for tp, batch in batches.items():
                    found[tp.partition].extend(_record(raw) for raw in batch)
                for tp in assigned:
                    end = consumer.highwater(tp)
                    reached = start is not None and any(
                        r.offset >= start for r in found[tp.partition]
                    )
                    if reached or (end is not None and await consumer.position(tp) >= end):
                        done.add(tp)
        except (kafka_errors.KafkaError, OSError) as exc:
            raise self._error(f"cannot read {assigned[0].topic}: {exc}") from exc
