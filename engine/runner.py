"""ConsumerRunner: runs chosen contexts' handlers from Kafka, with the inbox, retries and a DLQ.

    runner = ConsumerRunner(seam, ["shipping"])
    async with anyio.create_task_group() as group:
        await group.start(runner.run)   # returns once every handler's consumer is started
        ...
        runner.stop()                   # finish the record in hand, commit, leave the groups

Contract:

* One consumer group per handler, ``ConsumerSettings.group_prefix + handler name`` (the durable
  name: renaming a function never resets offsets). It reads the topics (outbox.topics naming)
  of the contexts owning the event types the handler subscribes to. The runner creates those
  topics explicitly when it starts, and each dead-letter topic before its first record.
* Each fetched batch (at most ``max_poll_records``) is decoded (engine.batch_decode: one
  validation per event class, record by record exactly what engine.codec.decode gives: upcast
  and validated). Records of types the handler does not subscribe to are passed over; malformed
  ones go to the dead-letter topic with their DecodeError reason at once, never to the handler.
* Group commit: decoded batches queue while a transaction runs, and the next transaction takes
  every batch queued (up to ``max_batch_records`` records and ``max_batch_bytes`` value bytes).
  It is applied in ONE transaction: ``inbox.claim_many`` (one statement on PostgreSQL),
  the handler for each claimed event (its ``ctx.session`` writes and ``ctx.publish`` follow-ups
  join that transaction), commit. Events already in the inbox are skipped, so a redelivery is
  never applied twice. When anything fails the transaction rolls back and the events up to the
  failing one are applied one by one (``inbox.claim`` + handler, a transaction each); batching
  then resumes. A failing event is retried with backoff (engine.retry); after ``max_attempts``
  handler attempts it is written to the dead-letter topic (engine.dead_letter_topic) and passed
  over, so a poison record never stalls its partition. An inbox outage (the claim itself fails)
  is retried without counting as an attempt. Attempts are counted in memory (a restart starts
  over), and effects outside the database are not rolled back: after a failed batch, handlers
  run again for the events before the failing one.
* Offsets are committed after handling, never before: per partition, up to the first record not
  yet applied, skipped or dead-lettered; after every batch, when partitions are revoked (the
  rebalance waits for the batch in hand; batches fetched before it are dropped and re-fetched)
  and at stop.
* Backpressure: fetching and decoding go on while a transaction is applied, until the records
  queued reach ``max_batch_records`` or ``max_batch_bytes`` (engine.apply_queue): per handler at
  most that many plus one fetch wait decoded, besides the transaction in hand and aiokafka's
  bounded prefetch.
* ``lag()`` is per handler and partition: the last fetch's highwater minus the next offset to
  handle (the bundled broker's ``end_offsets`` cannot be trusted).
* Handlers run in worker threads (sync ones there, async ones back on the event loop) with the
  structlog contextvars event_id, event_type, context, correlation_id, handler and attempt bound.
  The seam's middlewares (``EventSeam(middlewares=...)``) wrap every call, as on the bus: they
  run on the event loop, inside the batch's transaction, and the handler itself in a worker
  thread while the transaction's thread waits. A middleware that holds the call holds that
  transaction (and on SQLite the write lock its inbox rows took).
* Broker and database failures never end ``run``: they are logged, backed off and retried.
* ``condition`` (engine.health): running once every handler's consumer started, stopping after
  ``stop()``; a failing fetch or inbox claim names the handler's broker or database
  (``"broker (handler)"``) until one succeeds again.

Each handler's loops are engine.handler_worker.HandlerWorker; its database side (inbox and
transactions, in worker threads) is engine.inbox_apply.InboxApplier.
"""

from __future__ import annotations

import functools
import threading
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio
import structlog

from outbox.errors import PublishError
from outbox.kafka import KafkaPublisher, KafkaTopicAdmin
from outbox.topics import TopicNamer, Topics

from . import metrics
from .consumer import KafkaConsumer
from .dead_letter_topic import DeadLetterTopics
from .errors import ConsumeError, SettingsError, error_line
from .handler_worker import DeadLetterPublisher as DeadLetterPublisher
from .handler_worker import DeadLetterSender, HandlerWorker
from .handler_worker import HandlerStats as HandlerStats
from .health import BROKER, Condition
from .inbox_apply import InboxApplier
from .inbox_apply import RunnerHost as RunnerHost
from .retry import RetryPolicy
from .topic_records import TopicReader

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from anyio.abc import TaskStatus

    from .consumer import GroupConsumer, Partition
    from .contexts import HandlerSpec
    from .handler_worker import EnsureTopic
    from .settings import ConsumerSettings

    ConsumerFactory: TypeAlias = Callable[[str, Sequence[str]], GroupConsumer]
    """Builds the GroupConsumer of one group id for some topics."""

log = structlog.get_logger(__name__)


class ConsumerRunner:
    """Runs the handlers of ``contexts`` from Kafka (see the module docstring for the contract).

    ``settings`` defaults to ``seam.settings.consumer`` when that section exists, else to the
    ``EVENTSEAM_CONSUMER__*`` environment variables. ``consumers``, ``dead_letters`` and
    ``create_topics`` replace the Kafka parts (tests; without ``create_topics`` a given
    ``dead_letters`` means no topic is created); the runner closes only what it built.
    ``run`` runs once.
    """

    def __init__(
        self,
        seam: RunnerHost,
        contexts: Sequence[str],
        *,
        settings: ConsumerSettings | None = None,
        consumers: ConsumerFactory | None = None,
        dead_letters: DeadLetterPublisher | None = None,
        create_topics: EnsureTopic | None = None,
    ) -> None:
        self.seam, self.registry = seam, seam.registry
        self.settings: ConsumerSettings = settings or seam.settings.consumer
        self.policy = RetryPolicy.from_settings(self.settings)
        prefix = seam.settings.relay.topic_prefix
        self.dlq_names = DeadLetterTopics(self.settings.dlq_topic_template, prefix)
        self.specs = seam.contexts.handlers(contexts)
        if not self.specs:
            raise SettingsError(f"contexts {', '.join(contexts) or '(none)'} declare no handlers")
        self._topics = {spec.name: self._topics_of(spec) for spec in self.specs}
        self._own_kafka = dead_letters is None
        self.dead_letters = DeadLetterSender(dead_letters, create_topics)
        #: Opens a reader of the dead-letter topics (engine.dead_letter_marks), own Kafka only.
        self.dead_letter_reader: Callable[[], TopicReader] | None = (
            functools.partial(TopicReader, seam.settings.kafka, purpose="dlq-check")
            if self._own_kafka
            else None
        )
        #: Started, stopping, failing dependencies per handler: engine.health's /readyz.
        self.condition = Condition()
        self.workers = self._workers(consumers or self._kafka_consumer)
        self._stopping = anyio.Event()

    def _workers(self, consumers: ConsumerFactory) -> list[HandlerWorker]:
        lock = threading.Lock()  # shared by the appliers: SQLite has one writer
        return [
            HandlerWorker(
                spec,
                consumers(self.group_id(spec), sorted(self._topics[spec.name])),
                InboxApplier(spec, self.seam, lock, group=self.group_id(spec)),
                self,
            )
            for spec in self.specs
        ]

    def group_id(self, spec: HandlerSpec) -> str:
        """The consumer group of ``spec``: group prefix + durable handler name."""
        return self.settings.group_id(spec.name)

    def topics(self) -> dict[str, list[str]]:
        """Topics each handler reads, by durable handler name."""
        return {name: sorted(topics) for name, topics in self._topics.items()}

    def _topics_of(self, spec: HandlerSpec) -> dict[str, str]:
        """Topic -> owning context, for every event type ``spec`` subscribes to."""
        namer, topics = TopicNamer(self.seam.settings.relay), {}
        for event_type in spec.event_types:
            owner = self.seam.contexts.owner_of(event_type)
            if owner is None:
                raise SettingsError(
                    f"{spec.name} subscribes to {event_type.event_name}, which no context owns"
                )
            if not self.seam.settings.mode_of(owner).relays:
                log.warning("consumer.context_not_relayed", handler=spec.name, context=owner)
            topics[namer(owner, event_type.event_name)] = owner
        return topics

    def _kafka_consumer(self, group_id: str, topics: Sequence[str]) -> GroupConsumer:
        kafka = self.seam.settings.kafka
        return KafkaConsumer(
            kafka,
            self.settings,
            group_id=group_id,
            topics=topics,
            client_id=f"{kafka.client_id}-worker",
        )

    # -- running ----------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start every handler's consumer, report started, handle until ``stop``; then close."""
        log.info("consumer.starting", handlers=[spec.name for spec in self.specs])
        async with AsyncExitStack() as stack:
            connected = await self._connect(stack)
            task_status.started()
            if connected:
                self.condition.running()
                async with anyio.create_task_group() as sampling:
                    sampling.start_soon(metrics.every, metrics.LAG_INTERVAL, self._record_lag)
                    async with anyio.create_task_group() as group:
                        for worker in self.workers:
                            group.start_soon(
                                worker.run, name=f"eventseam.consumer.{worker.spec.name}"
                            )
                    sampling.cancel_scope.cancel()
        log.info("consumer.stopped", handlers=[spec.name for spec in self.specs])

    def stop(self) -> None:
        """Graceful stop: each handler finishes the record in hand, commits and leaves its group."""
        self.condition.stopping()
        self._stopping.set()
        for worker in self.workers:
            worker.stop()

    def lag(self) -> dict[str, dict[Partition, int]]:
        """Unhandled records per handler and assigned partition (a snapshot for metrics)."""
        return {worker.spec.name: worker.lag() for worker in self.workers}

    def _record_lag(self) -> None:
        """Set the lag gauges (eventseam_consumer_lag_records) of every handler's group."""
        metrics.record_consumer_lag({w.consumer.group_id: w.lag() for w in self.workers})

    def stats(self) -> dict[str, HandlerStats]:
        """Counters per handler (copies)."""
        return {worker.spec.name: replace(worker.stats) for worker in self.workers}

    async def _connect(self, stack: AsyncExitStack) -> bool:
        """Start the Kafka clients and create the topics, retrying; False when stopped first."""
        if self._own_kafka and not await self._start_kafka(stack):
            return False
        for spec in self.specs:
            for topic, owner in sorted(self._topics[spec.name].items()):
                if not await self._retrying(
                    "consumer.topic_unavailable", self._ensure, topic, owner
                ):
                    return False
        for worker in self.workers:
            stack.push_async_callback(worker.consumer.aclose)
            if not await self._retrying(
                "consumer.group_unavailable", worker.consumer.start, worker
            ):
                return False
        return True

    async def _start_kafka(self, stack: AsyncExitStack) -> bool:
        """The dead-letter producer and, unless given, topic creation through the admin client."""
        kafka = self.seam.settings.kafka
        publisher = KafkaPublisher(kafka, client_id=f"{kafka.client_id}-dlq")
        if not await self._retrying("consumer.producer_unavailable", publisher.start):
            return False
        stack.push_async_callback(publisher.aclose)
        self.dead_letters.publisher = publisher
        if self.dead_letters.ensure is None:
            admin = KafkaTopicAdmin(kafka)
            stack.push_async_callback(admin.aclose)
            self.dead_letters.ensure = Topics(
                self.seam.settings, admin, publisher.partitions
            ).ensure
        return True

    async def _ensure(self, topic: str, context: str) -> None:
        if self.dead_letters.ensure is not None:
            await self.dead_letters.ensure(topic, context)

    async def _retrying(
        self, event: str, action: Callable[..., Awaitable[object]], *args: Any
    ) -> bool:
        """Run ``action`` until it succeeds (True) or the runner is stopped (False)."""
        attempt = 0
        while not self._stopping.is_set():
            try:
                await action(*args)
                self.condition.recovered(BROKER)
                return True
            except (PublishError, ConsumeError) as exc:
                attempt += 1
                log.warning(event, error=str(exc), attempt=attempt)
                self.condition.failing(BROKER, error_line(exc))
                with anyio.move_on_after(self.policy.delay(attempt)):
                    await self._stopping.wait()
        return False
