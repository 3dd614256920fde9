"""One handler's loops in the consumer runner: fetch and decode; apply with the inbox, commit.

A HandlerWorker owns one consumer group (engine.consumer.GroupConsumer). Its fetch loop fetches
and decodes records on the event loop and queues them (engine.apply_queue); its apply loop
applies everything queued in one transaction (engine.inbox_apply, in worker threads) while the
fetch loop goes on, so records fetched during a transaction join the next one (group commit).
It retries failing events, writes poison records to the dead-letter topic (DeadLetterSender)
and commits the handled offsets (Progress). engine.runner.ConsumerRunner builds one per handler;
its docstring states the contract.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeAlias

import anyio
import anyio.lowlevel
import anyio.to_thread
import structlog

from outbox.crash_points import CRASH_AT, crash_point
from outbox.errors import PermanentPublishError, PublishError
from outbox.process_tuning import collector_paused

from . import metrics
from .apply_queue import ApplyQueue, Waiting
from .batch_decode import BatchDecoder
from .dead_letter_marks import DeadLetterLedger
from .dead_letter_topic import HANDLER_FAILED, dead_letter_message
from .errors import ConsumeError, DecodeError, error_line
from .health import BROKER, DATABASE
from .inbox_apply import InboxUnavailableError
from .offset_progress import Progress

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from .consumer import GroupConsumer, Partition, Record
    from .contexts import HandlerSpec
    from .events import DomainEvent
    from .inbox_apply import InboxApplier
    from .runner import ConsumerRunner
    from .types import Message

    EnsureTopic: TypeAlias = Callable[[str, str], Awaitable[object]]
    """Creates a topic (name, context whose topic settings apply) when it does not exist."""

log = structlog.get_logger(__name__)


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


class _Item(NamedTuple):
    """A decoded record the handler subscribes to, applied on its own."""

    record: Record
    event: DomainEvent


class DeadLetterSender:
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


class HandlerWorker:
    """Consumes, applies and commits for one handler (its own consumer group)."""

    def __init__(
        self,
        spec: HandlerSpec,
        consumer: GroupConsumer,
        applier: InboxApplier,
        runner: ConsumerRunner,
    ) -> None:
        self.spec, self.consumer, self._applier = spec, consumer, applier
        self._registry, self._policy = runner.registry, runner.policy
        self._dead_letters, self._dlq_names = runner.dead_letters, runner.dlq_names
        self._poll = max(runner.settings.fetch_max_wait_ms / 1000, 0.2)
        known = frozenset(c.event_name for c in self._registry.events())
        wanted = frozenset(
            c.event_name for c in self._registry.events() if issubclass(c, spec.event_types)
        )
        self._decoder = BatchDecoder(self._registry, skip=known - wanted)  # skip: not decoded
        self.stats = HandlerStats()
        self._log = log.bind(handler=spec.name, group=consumer.group_id)
        self._progress = Progress()
        self._generation = 0  # bumped by every revoke
        self._fetch_failures = 0
        self._committed: dict[Partition, int] = {}
        self._lock = anyio.Lock()
        self._interrupt = anyio.Event()
        self._ledger = DeadLetterLedger(
            spec.name, applier, runner.dead_letter_reader, self._pause, self._policy.delay
        )
        settings = runner.settings
        self._queue = ApplyQueue(settings.max_batch_records, settings.max_batch_bytes)
        self._stopping = False
        # What this handler reports to engine.health's /readyz, under its own keys.
        self._condition = runner.condition
        self._broker_key, self._database_key = (
            f"{BROKER} ({spec.name})",
            f"{DATABASE} ({spec.name})",
        )

    # -- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        """Until ``stop``: fetch and decode while the apply loop applies what was queued.

        The queue bounds the decoded records waiting (engine.apply_queue); at the end the
        transaction in hand finishes, what is handled is committed and the group is left.
        """
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._apply_loop)
                try:
                    while not self._stopping:
                        batch = await self._prepare()
                        if batch is not None:
                            self._queue.put(batch)
                            await _let_apply_start()
                            await self._queue.room()
                finally:
                    self._queue.close()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(30):
                async with self._lock:
                    await self._commit()
                await self.consumer.aclose()

    def stop(self) -> None:
        """Stop after the record in hand (a retry wait is cut short; that record is not done)."""
        self._stopping = True
        self._interrupt.set()
        self._queue.close()

    async def partitions_revoked(self, partitions: set[Partition]) -> None:
        """Rebalance: let the batch in hand end, commit what is done, forget the rest."""
        self._interrupt.set()
        async with self._lock:
            await self._commit()
            self._progress.forget()
            self._queue.clear()
            self._committed.clear()
            self._generation += 1
            if not self._stopping:
                self._interrupt = anyio.Event()
        if partitions:  # the first join revokes nothing: no line for it
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

    async def _prepare(self) -> Waiting | None:
        """Fetch records and decode them (malformed ones are dead-lettered here)."""
        if self._stopping:
            return None
        try:
            with collector_paused():
                records = await self.consumer.fetch(self._poll)
                decoded = self._decoder.decode(records) if records else []
        except ConsumeError as exc:
            self._fetch_failures += 1
            self._log.warning("consumer.fetch_failed", error=str(exc), attempt=self._fetch_failures)
            self._condition.failing(self._broker_key, error_line(exc))
            await self._pause(self._policy.delay(self._fetch_failures))
            return None
        self._fetch_failures, generation = 0, self._generation
        self._condition.recovered(self._broker_key)
        if not records:
            return None
        self._progress.add(records)
        wanted = self.spec.event_types  # spec.accepts, inlined: None and DecodeError are not
        events: list[DomainEvent] = [event for event in decoded if isinstance(event, wanted)]
        if len(events) == len(records):  # the usual batch: every record is the handler's
            return Waiting(generation, list(records), events, _value_bytes(records))
        chosen: list[Record] = []
        for record, event in zip(records, decoded, strict=True):
            if isinstance(event, DecodeError):
                await self._dead_letter(record, event.reason, 0, event)
            elif not isinstance(event, wanted):
                self._complete(record, "ignored")
            else:
                chosen.append(record)
        return Waiting(generation, chosen, events, _value_bytes(chosen))

    async def _apply_loop(self) -> None:
        """Apply what the fetch loop queued, one transaction at a time, and commit after each.

        Batches a revoke made stale are dropped (they are fetched again). Ends when the queue
        is closed (stop), after the transaction in hand.
        """
        while (batches := await self._queue.take()) is not None:
            async with self._lock:
                current = [batch for batch in batches if batch.generation == self._generation]
                if len(current) == 1:
                    records, events = current[0].records, current[0].events
                else:
                    records = [record for batch in current for record in batch.records]
                    events = [event for batch in current for event in batch.events]
                if events:
                    await self._apply(records, events)
                await self._commit()

    async def _apply(self, records: list[Record], events: list[DomainEvent]) -> None:
        """Batch transactions; on failure one by one up to the failing event, then batch again."""
        while events and not self._interrupt.is_set():
            outcome = await anyio.to_thread.run_sync(self._applier.apply_batch, events, records)
            if outcome.error is None:
                self._condition.recovered(self._database_key)
                self.stats.applied += outcome.applied
                self.stats.skipped += len(events) - outcome.applied
                self._progress.complete_all(records)
                return
            if outcome.index is None:
                self._log.warning("consumer.batch_failed", error=repr(outcome.error))
            cut = len(events) if outcome.index is None else outcome.index + 1
            for position in range(cut):
                first_error = outcome.error if position == outcome.index else None
                item = _Item(records[position], events[position])
                if not await self._isolate(item, first_error):
                    return
            records, events = records[cut:], events[cut:]

    async def _isolate(self, item: _Item, first_error: Exception | None) -> bool:
        """Apply one event with retries, then dead-letter it; False when interrupted first."""
        attempt, error, outages = (1 if first_error else 0), first_error, 0
        while True:
            if error is not None:
                self._log_failure(item, attempt, error)
                if not self._policy.should_retry(attempt) or (
                    attempt == 1 and await self._ledger.is_sent(item.record)
                ):  # dead-lettered before a kill: not retried, not written again
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
                    self._applier.apply_one, item.event, attempt + 1, item.record
                )
            except InboxUnavailableError as exc:
                outages, error = outages + 1, None
                self._condition.failing(self._database_key, error_line(exc))
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
            self._condition.recovered(self._database_key)
            self._complete(item.record, "applied" if applied else "skipped")
            return True

    async def _dead_letter(
        self, record: Record, reason: str, attempts: int, error: Exception
    ) -> bool:
        """Write ``record`` to the dead-letter topic once (retrying); False when interrupted first.

        Marked in the database around the write (engine.dead_letter_marks): a record already
        dead-lettered by a worker killed before its offset commit is not written again.
        """
        topic = self._dlq_names(self.spec.name, self.spec.context, record.topic)
        group, failures, drop_value = self.consumer.group_id, 0, False
        build = functools.partial(dead_letter_message, record, reason=reason, attempts=attempts)
        ids = {**_record_ids(record), "context": self.spec.context}
        already = await self._ledger.before_send(topic, record)
        if already is None:
            return False
        if already:
            self._log.info("consumer.dead_letter_on_topic", **ids, dead_letter_topic=topic)
            self._complete(record, "dead_lettered")
            return True
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
        if CRASH_AT:
            crash_point("after_dead_letter_ack")
        if not await self._ledger.after_ack(topic, record):
            return False  # marked "sending": the next delivery finds the record on the topic
        if CRASH_AT:
            crash_point("after_dead_letter_mark")
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


async def _let_apply_start() -> None:
    """Yield the event loop a few times: an idle apply loop takes the batch just queued and
    reaches its worker thread (its lock, anyio's thread limiter and ``run_sync`` take a loop
    step each) before the fetch loop decodes the next batch.

    With a single yield the transaction started only after one more fetch and decode per step
    (measured: 45-63 ms per transaction of 2,000 events between the apply loop's call and the
    thread's start and end, 9-11 ms with three yields). An apply loop already in its transaction
    makes each extra yield one quick loop turn.
    """
    for _ in range(3):
        await anyio.lowlevel.checkpoint()


def _value_bytes(records: Sequence[Record]) -> int:
    """Bytes of the records' values (the apply queue's memory bound counts them)."""
    return sum([len(record.value or b"") for record in records])


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
