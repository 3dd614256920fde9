"""Kafka through aiokafka: the relay's producer (a Publisher) and topic administration.

This module (with outbox.record_batch, which builds the batches) is where the outbox meets
aiokafka. Everything it raises is an OutboxError:
PublishError (retriable: broker down, leader moving, topic being re-created, timeouts) or
PermanentPublishError (the same records will fail again: too large, topic not authorized,
invalid topic). Broker errors that are not listed as permanent count as retriable, so an
unexpected error keeps rows pending instead of parking them.

Performance (DESIGN.md, "The relay"): the relay fills one batch per partition with
``new_batch``/``send`` (an outbox.record_batch.RecordBatch made of the rows' stored bytes,
handed to aiokafka's send_batch closed, so it never waits out ``linger_ms``), and picks
partitions itself from the key hash stored at write time (aiokafka's pure-Python murmur2 never
runs in the relay).

The producer never asks the broker to auto-create a topic: a broker that lost its topics
(restart of a memory broker, deleted topic) must not bring them back with broker-default
partitions, which would silently move aggregates to other partitions. Topics are created
explicitly (KafkaTopicAdmin, outbox.topics).
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.protocol.metadata import MetadataRequest

from engine.codec import encode_headers
from engine.errors import error_line

from .errors import PermanentPublishError, PublishError
from .kafka_security import diagnose_tls
from .kafka_security import security_options as security_options
from .murmur2 import key_hash
from .record_batch import BATCH_OVERHEAD, RecordBatch, record_size
from .topics import TopicSpec, TopicState

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from engine.settings import KafkaSettings
    from engine.types import Message

    from .lanes import Batch

log = structlog.get_logger(__name__)

_Record = tuple[bytes | None, bytes, bytes]
"""(key, value, headers in engine.record_wire's form)"""

#: Broker answers that will not change for the same records: the rows are parked after K tries.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.InvalidTopicError,
    kafka_errors.CorruptRecordException,
    kafka_errors.UnsupportedForMessageFormatError,
    kafka_errors.PolicyViolationError,
    kafka_errors.InvalidTimestampError,
)

_TOPIC_EXISTS = kafka_errors.TopicAlreadyExistsError.errno


def translate(exc: BaseException, topic: str) -> PublishError:
    """The OutboxError for an aiokafka failure (PermanentPublishError when it will fail again)."""
    if isinstance(exc, PublishError):
        return exc
    reason = error_line(exc)
    if isinstance(exc, PERMANENT_ERRORS):
        return PermanentPublishError(topic, reason)
    return PublishError(topic, reason)


def producer_options(
    settings: KafkaSettings, *, idempotent: bool, client_id: str | None = None
) -> dict[str, Any]:
    """AIOKafkaProducer keyword arguments for ``settings``."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": client_id or settings.client_id,
        "acks": "all" if settings.acks == "all" else int(settings.acks),
        "linger_ms": settings.linger_ms,
        "max_batch_size": settings.max_batch_size,
        "max_request_size": settings.max_request_size,
        "request_timeout_ms": settings.request_timeout_ms,
        "enable_idempotence": idempotent,
    }
    return options | security_options(settings)


def forbid_auto_create(client: Any, on_connect: Callable[[], None] | None = None) -> None:
    """Make every metadata request of ``client`` (an AIOKafkaClient) say allow_auto_topic_creation=false.

    ``on_connect`` is called for each new broker connection (reconnections included).
    """
    get_conn = client._get_conn

    async def _get_conn(*args: Any, **kwargs: Any) -> Any:
        conn = await get_conn(*args, **kwargs)
        if conn is not None and not getattr(conn, "_eventseam_guarded", False):
            if on_connect is not None:
                on_connect()
            send = conn.send

            def guarded_send(request: Any, *send_args: Any, **send_kwargs: Any) -> Any:
                if isinstance(request, MetadataRequest) and request._topics:
                    request = MetadataRequest(request._topics, allow_auto_topic_creation=False)
                return send(request, *send_args, **send_kwargs)

            conn.send = guarded_send
            conn._eventseam_guarded = True
        return conn

    client._get_conn = _get_conn


class Delivery:
    """The broker's answer to one sent batch: ``await delivery.wait()`` returns or raises PublishError."""

    __slots__ = ("_future", "_topic")

    def __init__(self, future: asyncio.Future[Any], topic: str) -> None:
        self._future, self._topic = future, topic

    async def wait(self) -> None:
        """Return once the broker acknowledged the batch; raise PublishError otherwise."""
        try:
            await self._future
        except kafka_errors.KafkaError as exc:
            raise translate(exc, self._topic) from exc


class KafkaPublisher:
    """Sends records to Kafka with aiokafka; implements engine.types.Publisher.

    ``start`` connects (PublishError when the broker cannot be reached; KafkaTLSError when it
    refuses the broker's certificate, KafkaSecurityError when the TLS/SASL settings cannot be
    used: neither is a PublishError, so callers that retry outages stop on them). With
    ``enable_idempotence="auto"`` it tries an idempotent producer and falls back, with a warning,
    when the broker refuses one. ``publish`` and ``send`` must be called from one task at a time
    per partition; ``aclose`` flushes what was sent and releases the connections.
    """

    def __init__(self, settings: KafkaSettings, *, client_id: str | None = None) -> None:
        if not settings.bootstrap_servers:
            raise PublishError("*", "KafkaSettings.bootstrap_servers is not set")
        self.settings = settings
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self.idempotent = False
        #: Broker connections opened so far; a change between a send and its acknowledgement
        #: means the broker may have restarted meanwhile (see Dispatcher).
        self.connections = 0

    @property
    def max_record_bytes(self) -> int:
        """Largest record (key + value + headers + overhead) the producer may send."""
        return self.settings.max_request_size

    async def start(self) -> None:
        """Connect; raises PublishError when the broker is unreachable or refuses the producer."""
        mode = self.settings.enable_idempotence
        if mode == "off" or (mode == "auto" and self.settings.acks != "all"):
            self._producer = await self._start_producer(idempotent=False)
            return
        try:
            self._producer = await self._start_producer(idempotent=True)
            self.idempotent = True
        except PublishError as exc:
            if mode == "on" or isinstance(exc.__cause__, kafka_errors.KafkaConnectionError):
                raise
            log.warning(
                "kafka.idempotence_refused", reason=exc.reason, fallback="enable_idempotence=off"
            )
            self._producer = await self._start_producer(idempotent=False)

    async def _start_producer(self, *, idempotent: bool) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            **producer_options(self.settings, idempotent=idempotent, client_id=self._client_id)
        )
        forbid_auto_create(producer.client, self._connected)
        try:
            await producer.start()
        except (kafka_errors.KafkaError, OSError) as exc:
            with anyio.CancelScope(shield=True):
                await producer.stop()
            tls_error = await diagnose_tls(self.settings)
            if tls_error is not None:
                raise tls_error from exc
            raise translate(exc, "*") from exc
        return producer

    def _connected(self) -> None:
        self.connections += 1

    @property
    def producer(self) -> AIOKafkaProducer:
        """The running aiokafka producer (PublishError before ``start``)."""
        if self._producer is None:
            raise PublishError("*", "the publisher is not started")
        return self._producer

    async def aclose(self, grace: float = 10.0) -> None:
        """Flush batches already sent (up to ``grace`` seconds) and close the connections."""
        producer, self._producer = self._producer, None
        if producer is not None:
            with anyio.move_on_after(grace, shield=True):
                await producer.stop()

    async def partitions(self, topic: str) -> int:
        """Number of partitions of an existing ``topic`` (PublishError when it does not exist)."""
        try:
            return len(await self.producer.partitions_for(topic))
        except kafka_errors.KafkaError as exc:
            raise translate(exc, topic) from exc

    def record_size(self, key: bytes | None, value: bytes, headers: bytes) -> int:
        """Bytes one record takes in a batch (``headers`` in engine.record_wire's form)."""
        return BATCH_OVERHEAD + record_size(key, value, headers)

    def new_batch(self, topic: str, partition: int) -> RecordBatch:
        """An empty batch for ``topic``/``partition`` (its capacity is ``max_batch_size``)."""
        return RecordBatch(topic, partition, self.settings.max_batch_size)

    async def send(self, batch: Batch) -> Delivery:
        """Hand ``batch`` (one of ``new_batch``'s) to the producer now (no wait for ``linger_ms``)."""
        if not isinstance(batch, RecordBatch):
            raise TypeError(f"send() takes a batch from new_batch(), not {type(batch).__name__}")
        try:
            future = await self.producer.send_batch(batch, batch.topic, partition=batch.partition)
        except kafka_errors.KafkaError as exc:
            raise translate(exc, batch.topic) from exc
        except AssertionError as exc:  # aiokafka asserts the partition is in its metadata
            raise PublishError(
                batch.topic, f"partition {batch.partition} is unknown to the producer"
            ) from exc
        return Delivery(future, batch.topic)

    async def publish(self, topic: str, *messages: Message) -> None:
        """Send ``messages`` to ``topic`` and wait for every acknowledgement (order kept per key).

        Raises PermanentPublishError before sending anything when a message is over
        ``max_request_size``, and the first PublishError of a failed partition otherwise.
        """
        records = [
            (message.key, message.value, encode_headers(message.headers)) for message in messages
        ]
        for record in records:
            if self.record_size(*record) > self.max_record_bytes:
                raise PermanentPublishError(topic, "a record is larger than max_request_size")
        count = await self.partitions(topic)
        by_partition: dict[int, list[_Record]] = defaultdict(list)
        for record in records:
            key = record[0]
            partition = random.randrange(count) if key is None else key_hash(key) % count
            by_partition[partition].append(record)
        errors: list[PublishError] = []
        async with anyio.create_task_group() as group:
            for partition, partition_messages in by_partition.items():
                group.start_soon(
                    self._publish_partition, topic, partition, partition_messages, errors
                )
        if errors:
            raise errors[0]

    async def _publish_partition(
        self, topic: str, partition: int, records: list[_Record], errors: list[PublishError]
    ) -> None:
        """Send ``records`` batch after batch (each after the previous one's acknowledgement)."""
        index = 0
        try:
            while index < len(records):
                batch = self.new_batch(topic, partition)
                while index < len(records) and batch.append(*records[index]):
                    index += 1
                await (await self.send(batch)).wait()
        except PublishError as exc:
            errors.append(exc)


class KafkaTopicAdmin:
    """Creates and describes topics (implements outbox.topics.TopicAdmin)."""

    def __init__(self, settings: KafkaSettings) -> None:
        if not settings.bootstrap_servers:
            raise PublishError("*", "KafkaSettings.bootstrap_servers is not set")
        options = security_options(settings)
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=settings.bootstrap_servers,
            client_id=f"{settings.client_id}-admin",
            request_timeout_ms=settings.request_timeout_ms,
            **options,
        )
        forbid_auto_create(self._admin._client)
        self._settings = settings
        self._started = False

    async def start(self) -> None:
        """Connect (PublishError when the broker is unreachable)."""
        try:
            await self._admin.start()
        except (kafka_errors.KafkaError, OSError) as exc:
            tls_error = await diagnose_tls(self._settings)
            if tls_error is not None:
                raise tls_error from exc
            raise translate(exc, "*") from exc
        self._started = True

    async def aclose(self) -> None:
        """Close the connections."""
        with anyio.CancelScope(shield=True):
            await self._admin.close()

    async def create(self, spec: TopicSpec) -> bool:
        """Create ``spec``'s topic: True when created, False when it already existed."""
        if not self._started:
            await self.start()
        new_topic = NewTopic(
            spec.name, spec.partitions, spec.replication_factor, topic_configs=spec.configs()
        )
        try:
            response = await self._admin.create_topics([new_topic])
        except (kafka_errors.KafkaError, OSError) as exc:
            raise translate(exc, spec.name) from exc
        for name, code, *rest in response.topic_errors:
            if name == spec.name and code == _TOPIC_EXISTS:
                return False
            if name == spec.name and code != 0:
                error = kafka_errors.for_code(code)(rest[0] if rest else "")
                raise translate(error, spec.name)
        return True

    async def exists(self, name: str) -> bool:
        """True when the broker lists ``name`` with partitions (never auto-creates it)."""
        try:
            topics = await self._admin.describe_topics([name])
        except (kafka_errors.KafkaError, OSError) as exc:
            raise translate(exc, name) from exc
        return bool(topics) and topics[0]["error_code"] == 0 and bool(topics[0]["partitions"])

    async def describe(self, name: str) -> TopicState:
        """Partitions, replication factor and configs of an existing topic."""
        try:
            topics = await self._admin.describe_topics([name])
            configs = await self._admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, name)]
            )
        except (kafka_errors.KafkaError, OSError) as exc:
            raise translate(exc, name) from exc
        partitions = topics[0]["partitions"] if topics else []
        replicas = len(partitions[0]["replicas"]) if partitions else 0
        values: dict[str, str] = {}
        for response in configs:
            for resource in response.resources:
                for entry in resource[4]:
                    values[str(entry[0])] = str(entry[1])
        return TopicState(
            name=name, partitions=len(partitions), replication_factor=replicas, configs=values
        )
