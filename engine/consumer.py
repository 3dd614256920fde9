"""The Kafka side of the consumer runner: one consumer-group member, on aiokafka.

This module and ``outbox/kafka.py`` are the only ones that import aiokafka. The runner
(engine.runner) talks to a ``GroupConsumer``; ``KafkaConsumer`` is the real one, tests use fakes.

Contract of ``KafkaConsumer``:

* Manual commits only (``enable_auto_commit=False``): nothing is committed unless ``commit`` is
  called, and ``commit`` takes the offset of the *next* record to read, per partition.
* Bounded fetches: ``fetch`` returns at most ``max_poll_records`` records; aiokafka's prefetch
  buffer is bounded by ``max_partition_fetch_bytes`` / ``fetch_max_bytes``.
* Rebalances call the ``RebalanceHooks`` given to ``start``; ``partitions_revoked`` runs before
  the group re-joins, so offsets committed there are the ones the next owner starts from.
* The consumer never asks the broker to auto-create a topic (the bundled broker would create it
  with 4 partitions); the runner creates its topics explicitly (outbox.topics).
* ``aclose`` leaves the group at once (no wait for the session timeout).
* Broker failures surface as ``ConsumeError`` (KafkaTLSError, not retried, when the broker's
  certificate is refused; KafkaSecurityError at construction for unusable TLS/SASL settings);
  a commit the group no longer accepts (the partitions moved to another member) returns False
  instead: the next owner re-reads those records and the inbox absorbs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka import errors as kafka_errors

from outbox.kafka import forbid_auto_create, security_options
from outbox.kafka_security import diagnose_tls

from .errors import ConsumeError, error_line

#: Seconds a closing consumer that holds no partitions waits for a group join in flight before it
#: drops its connections (see KafkaConsumer.aclose).
ABANDON_JOIN_AFTER: Final = 1.0

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from .settings import ConsumerSettings, KafkaSettings

log = structlog.get_logger(__name__)

Partition = tuple[str, int]
"""A topic partition as ``(topic, partition)`` (aiokafka's TopicPartition is such a tuple)."""


class Record(Protocol):
    """One fetched record (aiokafka's ConsumerRecord has these attributes)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def timestamp(self) -> int: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


class RebalanceHooks(Protocol):
    """What the runner does when the group moves partitions (awaited during the rebalance)."""

    async def partitions_revoked(self, partitions: set[Partition]) -> None: ...

    async def partitions_assigned(self, partitions: set[Partition]) -> None: ...


class GroupConsumer(Protocol):
    """One member of one consumer group, as the runner uses it (see the module docstring)."""

    group_id: str

    async def start(self, hooks: RebalanceHooks) -> None: ...

    async def fetch(self, wait: float) -> Sequence[Record]: ...

    async def commit(self, offsets: Mapping[Partition, int]) -> bool: ...

    def assignment(self) -> set[Partition]: ...

    def highwater(self, partition: Partition) -> int | None: ...

    def position(self, partition: Partition) -> int | None: ...

    async def aclose(self) -> None: ...


def consumer_options(
    kafka: KafkaSettings, settings: ConsumerSettings, group_id: str, client_id: str
) -> dict[str, Any]:
    """AIOKafkaConsumer keyword arguments for one handler's group (manual commits)."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": client_id,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": settings.auto_offset_reset,
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        "max_poll_interval_ms": settings.max_poll_interval_ms,
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
        "max_poll_records": settings.max_poll_records,
        "max_partition_fetch_bytes": settings.max_partition_fetch_bytes,
        "fetch_max_bytes": settings.fetch_max_bytes,
        "request_timeout_ms": max(kafka.request_timeout_ms, settings.session_timeout_ms + 5_000),
    }
    return options | security_options(kafka)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Forwards aiokafka's rebalance callbacks to the runner's hooks, with plain tuples."""

    def __init__(self, hooks: RebalanceHooks) -> None:
        self._hooks = hooks

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._hooks.partitions_revoked({(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._hooks.partitions_assigned({(tp.topic, tp.partition) for tp in assigned})


class KafkaConsumer:
    """A GroupConsumer on aiokafka for ``group_id``, subscribed to ``topics``."""

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: ConsumerSettings,
        *,
        group_id: str,
        topics: Sequence[str],
        client_id: str | None = None,
    ) -> None:
        if not kafka.bootstrap_servers:
            raise ConsumeError(group_id, "KafkaSettings.bootstrap_servers is not set")
        self.group_id = group_id
        self.topics = sorted(set(topics))
        self._options = consumer_options(
            kafka, settings, group_id, client_id or f"{kafka.client_id}-worker"
        )
        self._kafka = kafka
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self, hooks: RebalanceHooks) -> None:
        """Connect and subscribe (joining the group happens in the background)."""
        consumer = AIOKafkaConsumer(**self._options)
        forbid_auto_create(consumer._client)
        try:
            await consumer.start()
        except (kafka_errors.KafkaError, OSError) as exc:
            await consumer.stop()
            tls_error = await diagnose_tls(self._kafka)
            if tls_error is not None:  # a refused certificate is not an outage: no retry
                raise tls_error from exc
            raise ConsumeError(self.group_id, error_line(exc)) from exc
        consumer.subscribe(self.topics, listener=_Listener(hooks))
        self._consumer = consumer

    @property
    def _running(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise ConsumeError(self.group_id, "the consumer is not started")
        return self._consumer

    async def fetch(self, wait: float) -> Sequence[Record]:
        """Up to ``max_poll_records`` records in offset order per partition; [] after ``wait`` s."""
        try:
            batches = await self._running.getmany(timeout_ms=int(wait * 1000))
        except kafka_errors.KafkaError as exc:
            raise ConsumeError(self.group_id, error_line(exc)) from exc
        if len(batches) == 1:
            return next(iter(batches.values()))
        return [record for records in batches.values() for record in records]

    async def commit(self, offsets: Mapping[Partition, int]) -> bool:
        """Commit next-offsets of assigned partitions; False when the group moved on."""
        assigned = self.assignment()
        chosen = {TopicPartition(*p): o for p, o in offsets.items() if p in assigned}
        if not chosen:
            return not offsets
        try:
            await self._running.commit(chosen)
        except (kafka_errors.CommitFailedError, kafka_errors.IllegalStateError):
            return False
        except kafka_errors.KafkaError as exc:
            raise ConsumeError(self.group_id, f"commit failed: {error_line(exc)}") from exc
        return len(chosen) == len(offsets)

    def assignment(self) -> set[Partition]:
        """Partitions this member owns right now."""
        if self._consumer is None:
            return set()
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def highwater(self, partition: Partition) -> int | None:
        """Offset the next produced record of ``partition`` gets (from the last fetch), or None."""
        if self._consumer is None or partition not in self.assignment():
            return None
        value = self._consumer.highwater(TopicPartition(*partition))
        return None if value is None else int(value)

    def position(self, partition: Partition) -> int | None:
        """Offset of the next record ``fetch`` will return for ``partition``, or None if unknown."""
        if self._consumer is None or partition not in self.assignment():
            return None
        # aiokafka exposes the position only as a coroutine; read the same state synchronously.
        assignment = self._consumer._subscription.subscription.assignment
        try:
            state = assignment.state_value(TopicPartition(*partition))
        except (AttributeError, KeyError):
            return None
        return int(state.position) if state is not None and state.has_valid_position else None

    async def aclose(self) -> None:
        """Leave the group and close the connections (nothing is committed here).

        A consumer that still holds no partitions ``ABANDON_JOIN_AFTER`` seconds into closing
        has its connections closed: aiokafka's stop waits for a JoinGroup in flight, which the
        broker may hold for a whole rebalance (until every other member rejoined or its session
        expired: 37 s measured with one stopped member and 30 s sessions), and a member outside
        the group has nothing to hand back. The failed join ends aiokafka's coordination, and
        its stop goes on as usual.
        """
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        async with anyio.create_task_group() as group:
            group.start_soon(_abandon_join, consumer, self.group_id)
            await consumer.stop()
            group.cancel_scope.cancel()


async def _abandon_join(consumer: AIOKafkaConsumer, group_id: str) -> None:
    """After ``ABANDON_JOIN_AFTER`` s, close the connections of a consumer that holds no partitions."""
    await anyio.sleep(ABANDON_JOIN_AFTER)
    if not consumer.assignment():
        log.info("consumer.join_abandoned", group_id=group_id)
        await consumer._client.close()  # aiokafka has no public way to fail a join in flight
