"""One handler's loop in the consumer runner: fetch, decode, apply with the inbox, commit.

A HandlerWorker owns one consumer group (engine.consumer.GroupConsumer): it fetches and decodes
the next batch while the previous one is applied (engine.inbox_apply, in worker threads),
retries failing events, writes poison records to the dead-letter topic (DeadLetterSender) and
commits the handled offsets (Progress). engine.runner.ConsumerRunner builds one per handler;
its docstring states the contract.
"""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeAlias

import anyio
import anyio.lowlevel
import anyio.to_thread
import structlog

from outbox.crash_points import CRASH_AT, crash_point
from outbox.errors import PermanentPublishError, PublishError

from . import metrics
from .codec import decode
from .dead_letter_marks import DeadLetterLedger
from .dead_letter_topic import HANDLER_FAILED, dead_letter_message
from .errors import ConsumeError, DecodeError
from .inbox_apply import InboxUnavailableError

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
    """A decoded record the handler subscribes to (a tuple: built once per record)."""

    record: Record
    event: DomainEvent


@dataclass(frozen=True, slots=True)
class _Batch:
    """Decoded records of one fetch, and the rebalance generation they were fetched in."""

    generation: int
    items: list[_Item]


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
        if opened[0] != offset:
            self._done.setdefault(partition, set()).add(offset)
            return
        opened.popleft()
        done = self._done.get(partition)
        while done and opened and opened[0] in done:
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
        self._known = frozenset(c.event_name for c in self._registry.events())
        self._wanted = frozenset(
            c.event_name for c in self._registry.events() if issubclass(c, spec.event_types)
        )
        self._skippable = self._known - self._wanted  # passed over without decoding
        self.stats = HandlerStats()
        self._log = log.bind(handler=spec.name, group=consumer.group_id)
        self._progress = _Progress()
        self._generation = 0  # bumped by every revoke
        self._fetch_failures = 0
        self._committed: dict[Partition, int] = {}
        self._lock = anyio.Lock()
        self._interrupt = anyio.Event()
        self._ledger = DeadLetterLedger(
            spec.name, applier, runner.dead_letter_reader, self._pause, self._policy.delay
        )
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
        for key, value in record.headers if self._skippable else ():
            if key == "ce_type":
                if value.decode(errors="replace") in self._skippable:
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
            records = [item.record for item in pending]
            outcome = await anyio.to_thread.run_sync(self._applier.apply_batch, events, records)
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
