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
* Each fetched batch (at most ``max_poll_records``) is decoded (engine.codec: upcast and
  validated). Records of types the handler does not subscribe to are passed over; malformed ones
  go to the dead-letter topic with their DecodeError reason at once, never to the handler.
* The batch is applied in ONE transaction: ``inbox.filter_new``, the handler for each new event
  (its ``ctx.session`` writes and ``ctx.publish`` follow-ups join that transaction),
  ``inbox.record_many``, commit. Events already in the inbox are skipped, so a redelivery is
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
* Backpressure: the next batch is fetched and decoded while the current one is applied, and no
  further: at most two batches per handler are in memory besides aiokafka's bounded prefetch.
* ``lag()`` is per handler and partition: the last fetch's highwater minus the next offset to
  handle (the bundled broker's ``end_offsets`` cannot be trusted).
* Handlers run in worker threads (sync ones there, async ones back on the event loop) with the
  structlog contextvars event_id, event_type, context, correlation_id, handler and attempt bound.
* Broker and database failures never end ``run``: they are logged, backed off and retried.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import deque
from contextlib import AsyncExitStack, ExitStack, nullcontext
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import structlog
from sqlalchemy.exc import SQLAlchemyError
from structlog.contextvars import bind_contextvars

from outbox.errors import PermanentPublishError, PublishError
from outbox.kafka import KafkaPublisher, KafkaTopicAdmin
from outbox.topics import TopicNamer, Topics

from . import inbox, metrics
from .codec import decode
from .consumer import KafkaConsumer
from .dead_letter_topic import HANDLER_FAILED, DeadLetterTopics, dead_letter_message
from .errors import ConsumeError, DecodeError, EngineError, SettingsError
from .handler_context import HandlerContext
from .retry import RetryPolicy
from .unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from contextlib import AbstractContextManager

    from anyio.abc import TaskStatus
    from sqlalchemy.orm import Session, sessionmaker

    from .consumer import GroupConsumer, Partition, Record
    from .contexts import ContextMap, HandlerSpec
    from .events import DomainEvent
    from .registry import EventRegistry
    from .settings import ConsumerSettings, EventSeamSettings
    from .types import Message

    ConsumerFactory: TypeAlias = Callable[[str, Sequence[str]], GroupConsumer]
    """Builds the GroupConsumer of one group id for some topics."""

    EnsureTopic: TypeAlias = Callable[[str, str], Awaitable[object]]
    """Creates a topic (name, context whose topic settings apply) when it does not exist."""

log = structlog.get_logger(__name__)


class RunnerHost(Protocol):
    """What the runner needs from the application (EventSeam implements it)."""

    settings: EventSeamSettings
    contexts: ContextMap
    registry: EventRegistry
    session_factory: sessionmaker[Session] | None

    def publish(
        self, target: Session, /, *events: DomainEvent, context: str | None = None
    ) -> None: ...

    def check_publish(self, context: str, event_type: type[DomainEvent]) -> None: ...


class DeadLetterPublisher(Protocol):
    """Sends dead-letter records and waits for the broker's ack (KafkaPublisher, or a fake)."""

    async def publish(self, topic: str, *messages: Message) -> None: ...


@dataclass(slots=True)
class HandlerStats:
    """Counters of one handler since the runner started."""

    applied: int = 0
    skipped: int = 0
    ignored: int = 0
    dead_lettered: int = 0
    failures: int = 0


class _InboxUnavailableError(EngineError):
    """The inbox claim failed before the handler ran: not the event's fault, not an attempt."""

    retriable = True


@dataclass(frozen=True, slots=True)
class _Item:
    """A decoded record the handler subscribes to."""

    record: Record
    event: DomainEvent


@dataclass(frozen=True, slots=True)
class _Batch:
    """Decoded records of one fetch, and the rebalance generation they were fetched in."""

    generation: int
    items: list[_Item]


@dataclass(frozen=True, slots=True)
class _BatchOutcome:
    """One batch transaction: how many events were applied, or the error and where it happened."""

    applied: int = 0
    error: Exception | None = None
    index: int | None = None


class _Host:
    """HandlerHost whose ``transaction()`` is the transaction the runner holds open."""

    __slots__ = ("_seam", "_unit")

    def __init__(self, seam: RunnerHost, unit: UnitOfWork) -> None:
        self._seam, self._unit = seam, unit

    def transaction(self) -> AbstractContextManager[UnitOfWork]:
        return nullcontext(self._unit)

    def check_publish(self, context: str, event_type: type[DomainEvent]) -> None:
        self._seam.check_publish(context, event_type)


async def _await(function: Callable[..., Any], *args: object) -> None:
    await function(*args)


class _Applier:
    """Applies one handler's events with the inbox. Runs in worker threads (blocking DB I/O)."""

    def __init__(self, spec: HandlerSpec, seam: RunnerHost, sqlite_lock: threading.Lock) -> None:
        if seam.session_factory is None:
            raise SettingsError(
                "the consumer runner needs EventSeam(session_factory=...) for its inbox"
            )
        self.spec, self._seam, self._sessions = spec, seam, seam.session_factory
        self._sqlite_lock = sqlite_lock
        self._observe = metrics.handler_observer(spec.name, metrics.KAFKA)

    def apply_batch(self, events: Sequence[DomainEvent]) -> _BatchOutcome:
        """Apply the events not in the inbox, in order, and record them: one transaction."""
        bind_contextvars(handler=self.spec.name, context=self.spec.context)
        index: int | None = None
        entries: list[inbox.InboxEntry] = []
        try:
            with self._sessions() as session, self._exclusive(session), session.begin():
                host = _Host(self._seam, UnitOfWork(session, self._seam.publish))
                new = inbox.filter_new(session, self.spec.name, [e.event_id for e in events])
                for position, event in enumerate(events):
                    if event.event_id in new:
                        new.discard(event.event_id)  # a duplicate inside the batch runs once
                        index = position
                        self._invoke(event, 1, host, session)
                        entries.append(inbox.InboxEntry.of(event))
                index = None
                inbox.record_many(session, self.spec.name, entries)
        except Exception as exc:
            return _BatchOutcome(error=exc, index=index)
        return _BatchOutcome(applied=len(entries))

    def apply_one(self, event: DomainEvent, attempt: int) -> bool:
        """Claim the event and apply it in one transaction; False when it was applied before."""
        bind_contextvars(handler=self.spec.name, context=self.spec.context)
        with self._sessions() as session, self._exclusive(session), session.begin():
            try:
                claimed = inbox.claim(
                    session, self.spec.name, event.event_id, event.event_name, context=event.source
                )
            except SQLAlchemyError as exc:
                raise _InboxUnavailableError(f"inbox claim failed: {exc}") from exc
            if claimed:
                host = _Host(self._seam, UnitOfWork(session, self._seam.publish))
                self._invoke(event, attempt, host, session)
        return claimed

    def _exclusive(self, session: Session) -> AbstractContextManager[Any]:
        """SQLite has one writer: serialize this process's runner transactions on it.

        Without it a batch's read transaction fails with SQLITE_BUSY when it starts writing
        after another thread committed (WAL snapshot), and every batch falls back to one by one.
        """
        return self._sqlite_lock if session.get_bind().dialect.name == "sqlite" else nullcontext()

    def _invoke(self, event: DomainEvent, attempt: int, host: _Host, session: Session) -> None:
        """``_call``, its duration observed (eventseam_handler_duration_seconds)."""
        start = time.perf_counter()
        try:
            self._call(event, attempt, host, session)
        finally:
            self._observe(time.perf_counter() - start)

    def _call(self, event: DomainEvent, attempt: int, host: _Host, session: Session) -> None:
        """Call the handler function once (see HandlerContext for what it may do)."""
        spec = self.spec
        bind_contextvars(
            event_id=str(event.event_id),
            event_type=event.event_name,
            correlation_id=str(event.correlation_id or event.event_id),
            attempt=attempt,
        )
        if not spec.takes_context:
            if spec.is_async:
                anyio.from_thread.run(_await, spec.function, event)
            else:
                spec.function(event)
            return
        if spec.is_async:
            context = HandlerContext(spec, event, attempt, host, None)
            anyio.from_thread.run(_await, spec.function, event, context)
            # Buffered follow-ups go into the runner's transaction (host.transaction()).
            context.write_follow_ups()
        else:
            with ExitStack() as stack:
                spec.function(event, HandlerContext(spec, event, attempt, host, stack))
        session.flush()  # a handler's bad write fails here, attributed to its event


class _Progress:
    """Fetched offsets per partition; the committable offset is the first one still open."""

    def __init__(self) -> None:
        self._open: dict[Partition, deque[int]] = {}
        self._done: dict[Partition, set[int]] = {}
        self.next: dict[Partition, int] = {}

    def add(self, records: Sequence[Record]) -> None:
        for record in records:
            partition = (record.topic, record.partition)
            opened = self._open.get(partition)
            if opened is None:
                opened = self._open[partition] = deque()
            opened.append(record.offset)

    def complete(self, record: Record) -> None:
        """Mark ``record`` handled; advance ``next`` over the handled prefix of its partition."""
        partition, offset = (record.topic, record.partition), record.offset
        opened = self._open.get(partition)
        if not opened:
            return  # forgotten by a revoke: the record will be fetched again
        done = self._done.setdefault(partition, set())
        if opened[0] != offset:
            done.add(offset)
            return
        opened.popleft()
        while opened and opened[0] in done:
            offset = opened.popleft()
            done.discard(offset)
        self.next[partition] = offset + 1

    def first_open(self, partition: Partition) -> int | None:
        opened = self._open.get(partition)
        return opened[0] if opened else None

    def forget(self) -> None:
        self._open.clear()
        self._done.clear()
        self.next.clear()


class _DeadLetters:
    """Writes dead-letter records one at a time, creating each topic before its first record."""

    def __init__(self, publisher: DeadLetterPublisher | None, ensure: EnsureTopic | None) -> None:
        self.publisher, self.ensure = publisher, ensure
        self._ensured: set[str] = set()
        self._lock = anyio.Lock()

    async def send(self, topic: str, context: str, message: Message) -> None:
        """Send ``message`` and wait for the ack; PublishError otherwise."""
        if self.publisher is None:
            raise PublishError(topic, "the consumer runner is not started")
        async with self._lock:
            try:
                if self.ensure is not None and topic not in self._ensured:
                    await self.ensure(topic, context)
                    self._ensured.add(topic)
                await self.publisher.publish(topic, message)
            except PublishError:
                self._ensured.discard(topic)  # the broker may have lost it: create it again
                raise


class _HandlerWorker:
    """Consumes, applies and commits for one handler (its own consumer group)."""

    def __init__(
        self,
        spec: HandlerSpec,
        consumer: GroupConsumer,
        applier: _Applier,
        runner: ConsumerRunner,
    ) -> None:
        self.spec, self.consumer, self._applier = spec, consumer, applier
        self._registry, self._policy = runner.registry, runner.policy
        self._dead_letters, self._dlq_names = runner.dead_letters, runner.dlq_names
        self._poll = max(runner.settings.fetch_max_wait_ms / 1000, 0.2)
        self._known = frozenset(c.event_name for c in self._registry.events())
        self._wanted = frozenset(
            c.event_name for c in self._registry.events() if issubclass(c, spec.event_types)
        )
        self.stats = HandlerStats()
        self._log = log.bind(handler=spec.name, group=consumer.group_id)
        self._progress = _Progress()
        self._generation = 0  # bumped by every revoke
        self._fetch_failures = 0
        self._committed: dict[Partition, int] = {}
        self._lock = anyio.Lock()
        self._interrupt = anyio.Event()
        self._stopping = False

    # -- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        """Until ``stop``: fetch and decode the next batch while the previous one is applied.

        One batch is prepared ahead at most (bounded memory); then commit and leave the group.
        """
        try:
            ready = await self._prepare()
            while not self._stopping:
                async with anyio.create_task_group() as group:
                    if ready is not None:
                        group.start_soon(self._apply_batch, ready)
                        await anyio.lowlevel.checkpoint()  # let it reach its worker thread
                    ready = await self._prepare()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(30):
                async with self._lock:
                    await self._commit()
                await self.consumer.aclose()

    def stop(self) -> None:
        """Stop after the record in hand (a retry wait is cut short; that record is not done)."""
        self._stopping = True
        self._interrupt.set()

    async def partitions_revoked(self, partitions: set[Partition]) -> None:
        """Rebalance: let the batch in hand end, commit what is done, forget the rest."""
        self._interrupt.set()
        async with self._lock:
            await self._commit()
            self._progress.forget()
            self._committed.clear()
            self._generation += 1
            if not self._stopping:
                self._interrupt = anyio.Event()
        self._log.info("consumer.partitions_revoked", partitions=sorted(partitions))

    async def partitions_assigned(self, partitions: set[Partition]) -> None:
        """Rebalance done: positions restart from the committed offsets."""
        self._log.info("consumer.partitions_assigned", partitions=sorted(partitions))

    def lag(self) -> dict[Partition, int]:
        """Records not handled yet per assigned partition (from the last fetch's highwater)."""
        lags: dict[Partition, int] = {}
        for partition in self.consumer.assignment():
            highwater = self.consumer.highwater(partition)
            position = self._progress.first_open(partition)
            if position is None:
                position = self.consumer.position(partition)
            if highwater is not None and position is not None:
                lags[partition] = max(0, highwater - position)
        return lags

    # -- handling ---------------------------------------------------------------------------

    async def _prepare(self) -> _Batch | None:
        """Fetch records and decode them (malformed ones are dead-lettered here)."""
        if self._stopping:
            return None
        try:
            records = await self.consumer.fetch(self._poll)
        except ConsumeError as exc:
            self._fetch_failures += 1
            self._log.warning("consumer.fetch_failed", error=str(exc), attempt=self._fetch_failures)
            await self._pause(self._policy.delay(self._fetch_failures))
            return None
        self._fetch_failures, generation = 0, self._generation
        if not records:
            return None
        self._progress.add(records)
        items: list[_Item] = []
        for record in records:
            try:
                item = self._decode(record)
            except DecodeError as exc:
                await self._dead_letter(record, exc.reason, 0, exc)
                continue
            if item is not None:
                items.append(item)
        return _Batch(generation, items)

    async def _apply_batch(self, batch: _Batch) -> None:
        """Apply a prepared batch and commit, unless a revoke made it stale (it is re-fetched)."""
        async with self._lock:
            if batch.generation == self._generation:
                if batch.items:
                    await self._apply(batch.items)
                await self._commit()

    def _decode(self, record: Record) -> _Item | None:
        """The record as this handler's event; None when passed over; DecodeError if malformed."""
        for key, value in record.headers:
            if key == "ce_type":
                name = value.decode(errors="replace")
                if name in self._known and name not in self._wanted:
                    self._complete(record, "ignored")
                    return None
                break
        event = decode(self._registry, record.key, record.value, record.headers)
        if not self.spec.accepts(event):
            self._complete(record, "ignored")
            return None
        return _Item(record, event)

    async def _apply(self, items: list[_Item]) -> None:
        """Batch transactions; on failure one by one up to the failing event, then batch again."""
        pending = items
        while pending and not self._interrupt.is_set():
            events = [item.event for item in pending]
            outcome = await anyio.to_thread.run_sync(self._applier.apply_batch, events)
            if outcome.error is None:
                self.stats.applied += outcome.applied
                self.stats.skipped += len(pending) - outcome.applied
                for item in pending:
                    self._progress.complete(item.record)
                return
            if outcome.index is None:
                self._log.warning("consumer.batch_failed", error=repr(outcome.error))
            cut = len(pending) if outcome.index is None else outcome.index + 1
            for position, item in enumerate(pending[:cut]):
                first_error = outcome.error if position == outcome.index else None
                if not await self._isolate(item, first_error):
                    return
            pending = pending[cut:]

    async def _isolate(self, item: _Item, first_error: Exception | None) -> bool:
        """Apply one event with retries, then dead-letter it; False when interrupted first."""
        attempt, error, outages = (1 if first_error else 0), first_error, 0
        while True:
            if error is not None:
                self._log_failure(item, attempt, error)
                if not self._policy.should_retry(attempt):
                    return await self._dead_letter(item.record, HANDLER_FAILED, attempt, error)
            delay = (
                self._policy.delay(attempt)
                if error
                else (self._policy.delay(outages) if outages else 0)
            )
            if (delay and not await self._pause(delay)) or self._interrupt.is_set():
                return False
            try:
                applied = await anyio.to_thread.run_sync(
                    self._applier.apply_one, item.event, attempt + 1
                )
            except _InboxUnavailableError as exc:
                outages, error = outages + 1, None
                self._log.warning(
                    "consumer.inbox_unavailable",
                    **_event_ids(item.event),
                    context=self.spec.context,
                    error=str(exc),
                    attempt=outages,
                )
                continue
            except Exception as exc:
                attempt, error = attempt + 1, exc
                continue
            self._complete(item.record, "applied" if applied else "skipped")
            return True

    async def _dead_letter(
        self, record: Record, reason: str, attempts: int, error: Exception
    ) -> bool:
        """Write ``record`` to the dead-letter topic (retrying); False when interrupted first."""
        topic = self._dlq_names(self.spec.name, self.spec.context, record.topic)
        group, failures, drop_value = self.consumer.group_id, 0, False
        build = functools.partial(dead_letter_message, record, reason=reason, attempts=attempts)
        ids = {**_record_ids(record), "context": self.spec.context}
        while True:
            message = build(handler=self.spec.name, group=group, error=error, drop_value=drop_value)
            try:
                await self._dead_letters.send(topic, self.spec.context, message)
                break
            except PublishError as exc:
                if isinstance(exc, PermanentPublishError) and not drop_value:
                    drop_value = True  # too large with our headers: keep the coordinates only
                    continue
                failures += 1
                self._log.error("consumer.dead_letter_failed", **ids, topic=topic, error=str(exc))
                if not await self._pause(self._policy.delay(failures)):
                    return False
        where = f"{record.topic}/{record.partition}@{record.offset}"
        error_text = f"{type(error).__name__}: {error}"
        self._log.error(
            "consumer.dead_lettered", **ids, reason=reason, attempts=attempts, record=where,
            dead_letter_topic=topic, error=error_text,
        )  # fmt: skip
        metrics.record_dead_letter(self.spec.name, metrics.KAFKA, reason)
        self._complete(record, "dead_lettered")
        return True

    def _complete(self, record: Record, outcome: str) -> None:
        setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
        self._progress.complete(record)

    def _log_failure(self, item: _Item, attempt: int, error: Exception) -> None:
        self.stats.failures += 1
        event = item.event
        self._log.warning(
            "consumer.handler_failed",
            context=self.spec.context,
            event_id=str(event.event_id),
            event_type=event.event_name,
            correlation_id=str(event.correlation_id or event.event_id),
            attempt=attempt,
            error=f"{type(error).__name__}: {error}",
        )

    async def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds``; False when stop or a rebalance cut the sleep short."""
        with anyio.move_on_after(seconds):
            await self._interrupt.wait()
            return False
        return True

    async def _commit(self) -> None:
        """Commit handled offsets not committed yet (a refusal is fine: the inbox absorbs)."""
        offsets = {p: o for p, o in self._progress.next.items() if self._committed.get(p) != o}
        if not offsets:
            return
        try:
            accepted = await self.consumer.commit(offsets)
        except ConsumeError as exc:
            self._log.warning("consumer.commit_failed", error=str(exc))
            return
        if accepted:
            self._committed.update(offsets)
        else:
            self._log.info("consumer.commit_refused", reason="rebalanced")


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
        self.dead_letters = _DeadLetters(dead_letters, create_topics)
        self.workers = self._workers(consumers or self._kafka_consumer)
        self._stopping = anyio.Event()

    def _workers(self, consumers: ConsumerFactory) -> list[_HandlerWorker]:
        lock = threading.Lock()  # shared by the appliers: SQLite has one writer
        return [
            _HandlerWorker(
                spec,
                consumers(self.group_id(spec), sorted(self._topics[spec.name])),
                _Applier(spec, self.seam, lock),
                self,
            )
            for spec in self.specs
        ]

    def group_id(self, spec: HandlerSpec) -> str:
        """The consumer group of ``spec``: group prefix + durable handler name."""
        return f"{self.settings.group_prefix}{spec.name}"

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
                return True
            except (PublishError, ConsumeError) as exc:
                attempt += 1
                log.warning(event, error=str(exc), attempt=attempt)
                with anyio.move_on_after(self.policy.delay(attempt)):
                    await self._stopping.wait()
        return False


def _event_ids(event: DomainEvent) -> dict[str, str]:
    """The ids every consume log line carries, from a decoded event."""
    return {
        "event_id": str(event.event_id),
        "event_type": event.event_name,
        "correlation_id": str(event.correlation_id or event.event_id),
    }


def _record_ids(record: Record) -> dict[str, str]:
    """``_event_ids`` from a record's CloudEvents headers (a malformed record may lack some)."""
    found = {key: value.decode(errors="replace") for key, value in record.headers}
    ids = {"event_id": found.get("ce_id", ""), "event_type": found.get("ce_type", "")}
    ids["correlation_id"] = found.get("ce_correlationid", ids["event_id"])
    return ids
