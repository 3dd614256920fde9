"""Sending a round of claimed rows: one lane per topic partition, one batch in flight per lane.

A round's rows are grouped by (topic, partition), ``partition = keyhash % partitions`` (the hash
stored at write time, as Kafka's default partitioner computes it). Each group is a *lane*: its
rows go out in ``seq`` order as producer batches, and a lane sends its next batch only after the
broker acknowledged the previous one, including the previous round's batch on the same
partition. So a batch that fails never has a later batch of the same partition overtake it: the
lane stops, the rows stay pending, and the relay scans again from the start (after a backoff
for retriable failures). Acknowledged rows go to the Marker. A lane builds its first batch while
the previous round's batch is still in flight, so the CPU work overlaps the broker's round trip.

A row's stored headers are already its record's headers section (codec.encode_headers), so
they are copied into the batch as they are; the row's writer (outbox.writer, through the codec)
is what guarantees they are well formed. Headers an earlier build stored as JSON are read and
re-encoded first, and headers that cannot be read park their row.

After the producer reconnected (a broker restart), an acknowledgement counts only if the topic
still exists: a memory broker that lost its topics acknowledges and drops records (Tansu does).

Permanent failures (parked.Failures) hold back one aggregate, not the lane: a single-row batch
that fails for good charges its row and the lane moves on without that aggregate's rows; a
multi-row batch that fails for good stops the lane and its rows are retried one per batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import anyio
import structlog
from sqlalchemy.exc import SQLAlchemyError
from structlog.contextvars import bound_contextvars

from engine.codec import decode_headers, encode_headers, is_json_headers
from engine.metrics import FAILED, PARKED, PUBLISHED, record_relay

from .crash_points import CRASH_AT, crash_point
from .errors import PermanentPublishError, PublishError

if TYPE_CHECKING:
    from collections.abc import Callable

    from .claim import Marker, PendingRow
    from .kafka import Delivery
    from .parked import Failures
    from .topics import Topics

log = structlog.get_logger(__name__)

Lane = tuple[str, int]
"""(topic, partition)"""

_Filled = tuple["Batch", list["PendingRow"], list[tuple["PendingRow", PermanentPublishError]], int]

#: Bytes a record may take beyond key + value + stored headers (varints, record and batch headers).
_RECORD_OVERHEAD = 128


def row_log_ids(row: PendingRow) -> dict[str, str]:
    """The ids a relay log line about ``row`` carries, from its stored headers (best effort)."""
    ids = {"event_type": row.event_type, "context": row.context}
    try:
        headers = dict(decode_headers(row.headers))
    except (ValueError, UnicodeError):
        return ids  # undecodable headers: one of the reasons a row is parked
    event_id = headers.get("ce_id", b"").decode(errors="replace")
    correlation = headers.get("ce_correlationid", b"").decode(errors="replace")
    return ids | {"event_id": event_id, "correlation_id": correlation or event_id}


class Batch(Protocol):
    """Records for one topic partition (outbox.record_batch.RecordBatch)."""

    topic: str
    partition: int

    def append(self, key: bytes, value: bytes, headers: bytes) -> bool:
        """Add a record (``headers``: codec.encode_headers' form); False when the batch is full."""
        ...

    def __len__(self) -> int: ...


class BatchPublisher(Protocol):
    """What the relay needs from a publisher (outbox.kafka.KafkaPublisher)."""

    @property
    def max_record_bytes(self) -> int: ...

    @property
    def connections(self) -> int: ...

    def record_size(self, key: bytes | None, value: bytes, headers: bytes) -> int: ...

    def new_batch(self, topic: str, partition: int) -> Batch: ...

    async def send(self, batch: Batch) -> Delivery: ...


class _Tail:
    """The end of a lane: set when its last batch settled; ``failed`` when later sends must not go."""

    __slots__ = ("done", "failed")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.failed = False


def _set_event() -> anyio.Event:
    event = anyio.Event()
    event.set()
    return event


class Dispatcher:
    """Sends rounds of rows. After a failure, ``retry_error`` or ``rescan`` tells the relay what to do.

    ``retry_error``: a retriable failure; back off, then scan again from the start.
    ``rescan``: rows were left unsent; scan again from the start once the pipeline drained.
    ``reset`` clears both and the lanes (call only when no round is in flight).
    """

    def __init__(
        self,
        publisher: BatchPublisher,
        topics: Topics,
        failures: Failures,
        marker: Marker,
    ) -> None:
        self._publisher, self._topics, self._failures, self._marker = (
            publisher,
            topics,
            failures,
            marker,
        )
        self._tails: dict[Lane, _Tail] = {}
        #: Set once the last round called took its tails (rounds chain in call order).
        self._routed = _set_event()
        self.retry_error: PublishError | None = None
        self.rescan = False
        self.acked = 0

    def reset(self) -> None:
        """Forget lanes and failure flags (no round may be in flight)."""
        self._tails.clear()
        self._routed = _set_event()
        self.retry_error, self.rescan = None, False

    async def send_round(self, rows: list[PendingRow], may_send: Callable[[], bool]) -> None:
        """Send ``rows`` (seq order), lane by lane, concurrently across lanes.

        ``may_send`` is asked before each batch: False (leases lapsed or lost) stops the lanes.
        Rounds join each lane's chain in the order ``send_round`` was called, even when routing
        an earlier round waits longer (a topic lookup after a failure): otherwise a later round
        could go out first and put an aggregate's events out of order (measured with a broker
        outage through tests/reliability/fault_proxy.py).
        """
        previous_round, routed = self._routed, anyio.Event()
        self._routed = routed
        chained: list[tuple[Lane, list[PendingRow], _Tail | None, _Tail]] = []
        try:
            lanes = await self._route(rows)
            await previous_round.wait()
            for lane, lane_rows in lanes.items():
                chained.append((lane, lane_rows, self._tails.get(lane), _Tail()))
                self._tails[lane] = chained[-1][3]
        finally:
            routed.set()
        if len(chained) == 1:  # the usual round at low rates: no task group needed
            await self._run_lane(*chained[0], may_send)
            return
        async with anyio.create_task_group() as group:
            for lane, lane_rows, previous, tail in chained:
                group.start_soon(self._run_lane, lane, lane_rows, previous, tail, may_send)

    async def _route(self, rows: list[PendingRow]) -> dict[Lane, list[PendingRow]]:
        """Group rows by lane, keeping seq order; rows whose topic is unusable are handled here."""
        lanes: dict[Lane, list[PendingRow]] = {}
        targets: dict[tuple[str, str], list[list[PendingRow]] | PublishError] = {}
        unsendable: list[tuple[PendingRow, PublishError]] = []
        for row in rows:
            target = targets.get((row.context, row.event_type))
            if target is None:
                target = targets[(row.context, row.event_type)] = await self._buckets(row, lanes)
            if isinstance(target, PublishError):
                unsendable.append((row, target))
            else:
                target[row.keyhash % len(target)].append(row)
        for row, error in unsendable:
            if error.retriable:
                self._retry_later(error)
                record_relay(FAILED, [row.context])
            else:
                await self._charge([row], error)
        return {lane: lane_rows for lane, lane_rows in lanes.items() if lane_rows}

    async def _buckets(
        self, row: PendingRow, lanes: dict[Lane, list[PendingRow]]
    ) -> list[list[PendingRow]] | PublishError:
        """The row lists of each partition of ``row``'s topic, or why it cannot be sent now."""
        try:
            topic = self._topics.name(row.context, row.event_type)
            partitions = await self._topics.partitions(topic, row.context)
        except PublishError as exc:
            return exc
        return [lanes.setdefault((topic, partition), []) for partition in range(partitions)]

    async def _run_lane(
        self,
        lane: Lane,
        rows: list[PendingRow],
        previous: _Tail | None,
        tail: _Tail,
        may_send: Callable[[], bool],
    ) -> None:
        try:
            tail.failed = not await self._send_lane(lane, rows, previous, may_send)
            if tail.failed:
                self.rescan = True
        finally:
            tail.done.set()

    async def _send_lane(
        self,
        lane: Lane,
        rows: list[PendingRow],
        previous: _Tail | None,
        may_send: Callable[[], bool],
    ) -> bool:
        """Send ``rows`` batch after batch; False when the lane must stop.

        The first batch is built while the previous round's batch of this partition is in flight,
        and built again if a failure changed which aggregates are held back meanwhile.
        """
        version = self._failures.version
        filled = self._fill(lane, rows, 0)
        if previous is not None:
            await previous.done.wait()
            if previous.failed:
                return False
            if self._failures.version != version:
                filled = self._fill(lane, rows, 0)
        while True:
            batch, sent, rejected, index = filled
            for row, error in rejected:
                await self._charge([row], error)
            if sent and not (
                may_send() and self.retry_error is None and await self._deliver(lane, batch, sent)
            ):
                return False
            if index >= len(rows):
                return True
            filled = self._fill(lane, rows, index)

    async def _deliver(self, lane: Lane, batch: Batch, sent: list[PendingRow]) -> bool:
        """Send one batch and hand its rows to the Marker once acknowledged; False: stop the lane."""
        connections = self._publisher.connections
        if CRASH_AT:
            crash_point("before_send")
        try:
            delivery = await self._publisher.send(batch)
            if CRASH_AT:
                crash_point("after_send")
            await delivery.wait()
            if self._publisher.connections != connections:
                await self._check_topic(lane[0])
        except PublishError as exc:
            return await self._failed(sent, exc)
        if CRASH_AT:
            crash_point("after_ack")
        self.acked += len(sent)
        self._failures.cleared(sent)
        self._marker.add([row.seq for row in sent])
        record_relay(PUBLISHED, [row.context for row in sent])
        return True

    def _fill(self, lane: Lane, rows: list[PendingRow], index: int) -> _Filled:
        """One batch from ``rows[index:]``: (batch, rows in it, rows rejected for good, next index)."""
        batch = self._publisher.new_batch(*lane)
        sent: list[PendingRow] = []
        rejected: list[tuple[PendingRow, PermanentPublishError]] = []
        failures = self._failures
        if not (failures.blocked or failures.suspects):
            index, full = self._fill_plain(batch, rows, index, sent)
            if full:
                return batch, sent, rejected, index
        while index < len(rows):
            row = rows[index]
            held = (failures.blocked or failures.suspects) and self._held(row, alone=bool(sent))
            if held == "stop":
                break
            record = None if held else self._record(lane[0], row)
            if isinstance(record, PermanentPublishError):
                rejected.append((row, record))
                failures.block(row.key, 1.0)
            elif record is not None:
                if not batch.append(row.key.encode(), row.payload, record):
                    break
                sent.append(row)
                if row.seq in failures.suspects:
                    return batch, sent, rejected, index + 1  # a suspect goes alone
            index += 1
        return batch, sent, rejected, index

    def _fill_plain(
        self, batch: Batch, rows: list[PendingRow], index: int, sent: list[PendingRow]
    ) -> tuple[int, bool]:
        """The hot path of ``_fill`` while no aggregate is held back: (next index, batch full).

        The stored headers go into the batch as they are (they are the record's headers section).
        Stops at the first row that needs a closer look (headers an earlier build stored as JSON,
        a record that may be too large); ``_fill`` goes on from there.
        """
        limit = self._publisher.max_record_bytes - _RECORD_OVERHEAD
        append, end = batch.append, len(rows)
        while index < end:
            row = rows[index]
            headers = row.headers
            if len(row.key) * 4 + len(row.payload) + len(headers) > limit:
                break
            if is_json_headers(headers):
                break
            if not append(row.key.encode(), row.payload, headers):
                return index, True
            sent.append(row)
            index += 1
        return index, False

    def _held(self, row: PendingRow, *, alone: bool) -> str | None:
        """ "skip" for a held-back aggregate, "stop" before a suspect (it goes alone), else None."""
        if row.key in self._failures.blocked:
            self.rescan = True  # its rows come back after the backoff
            return "skip"
        return "stop" if alone and row.seq in self._failures.suspects else None

    def _record(self, topic: str, row: PendingRow) -> bytes | PermanentPublishError:
        """The row's headers section (read and checked), or why the row can never be sent as it is."""
        try:
            headers = encode_headers(decode_headers(row.headers))
        except (ValueError, UnicodeError) as exc:
            return PermanentPublishError(topic, f"stored headers are not decodable: {exc}")
        limit = self._publisher.max_record_bytes
        if len(row.key) * 4 + len(row.payload) + len(row.headers) + _RECORD_OVERHEAD > limit:
            size = self._publisher.record_size(row.key.encode(), row.payload, headers)
            if size > limit:
                return PermanentPublishError(
                    topic, f"record of {size} bytes is larger than max_request_size ({limit})"
                )
        return headers

    async def _check_topic(self, topic: str) -> None:
        """After a reconnection: raise PublishError when the topic is gone.

        A memory broker that restarted acknowledges records for topics it lost and drops them
        (Tansu does); such an acknowledgement must not mark rows as sent.
        """
        if not await self._topics.exists(topic):
            raise PublishError(
                topic, "the topic vanished from the broker while sending (broker restarted?)"
            )

    async def _failed(self, sent: list[PendingRow], exc: PublishError) -> bool:
        """Handle a failed batch; True when the lane may go on."""
        if exc.retriable:
            self._retry_later(exc)
            record_relay(FAILED, [row.context for row in sent])
            return False
        if len(sent) > 1:
            log.warning(
                "relay.batch_rejected",
                topic=exc.topic,
                rows=len(sent),
                event_ids=[row_log_ids(row).get("event_id") for row in sent],
                error=exc.reason,
            )
            self._failures.suspect(sent)
            record_relay(FAILED, [row.context for row in sent])
            return False
        await self._charge(sent, exc)
        return True

    async def _charge(self, rows: list[PendingRow], exc: PublishError) -> None:
        """Count a failed attempt on each row (parked after K); its log lines carry its ids."""
        try:
            for row in rows:
                with bound_contextvars(**row_log_ids(row)):
                    await self._failures.record([row], exc.reason)
                # Failures.record unblocks an aggregate exactly when it parked its row.
                parked = row.key not in self._failures.blocked
                record_relay(PARKED if parked else FAILED, [row.context])
        except (SQLAlchemyError, OSError) as db_error:
            self._retry_later(
                PublishError(exc.topic, f"cannot record a failed attempt: {db_error}")
            )

    def _retry_later(self, exc: PublishError) -> None:
        if self.retry_error is None:
            self.retry_error = exc
            self._topics.forget()
