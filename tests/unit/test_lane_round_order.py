"""Relay rounds reach the producer in the order they were dispatched, whatever their routing takes.

Regression: after a broker outage the relay forgets its topic metadata; when the first round's
topic lookup returned after the next round's, the later round went out first and put an
aggregate's events out of order on the topic (found by tests/reliability/test_network_broker_outage.py
with a hung broker connection).
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from engine.retry import RetryPolicy
from outbox.claim import PendingRow
from outbox.lanes import Dispatcher
from outbox.parked import Failures

pytestmark = pytest.mark.anyio


class _Batch:
    def __init__(self, topic: str, partition: int) -> None:
        self.topic, self.partition = topic, partition
        self.values: list[bytes] = []

    def append(self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> bool:
        self.values.append(value)
        return True

    def __len__(self) -> int:
        return len(self.values)


class _Delivery:
    async def wait(self) -> None:
        await anyio.lowlevel.checkpoint()


class _Publisher:
    """Acknowledges every batch at once and remembers the values in send order."""

    max_record_bytes = 1_000_000
    connections = 0

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def record_size(self, key: bytes | None, value: bytes, headers: list[Any]) -> int:
        return len(value)

    def new_batch(self, topic: str, partition: int) -> _Batch:
        return _Batch(topic, partition)

    async def send(self, batch: _Batch) -> _Delivery:
        self.sent.extend(batch.values)
        return _Delivery()


class _Topics:
    """One partition; the first lookup waits for ``release`` (a slow metadata request)."""

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.lookups = 0

    def name(self, context: str, event_type: str) -> str:
        return f"unit.{context}"

    async def partitions(self, topic: str, context: str) -> int:
        self.lookups += 1
        if self.lookups == 1:
            await self.release.wait()
        return 1

    def forget(self) -> None:
        return None


class _Marker:
    def add(self, seqs: list[int]) -> None:
        return None


def row(seq: int) -> PendingRow:
    """A row of aggregate ``a`` with ``seq`` as its payload."""
    return PendingRow(seq, "orders", "a", "unit.Ticked", str(seq).encode(), b"[]", 0)


async def test_a_later_round_waits_for_an_earlier_round_still_routing() -> None:
    """A round whose topic lookup is slow still goes out before the round dispatched after it."""
    publisher, topics = _Publisher(), _Topics()
    failures = Failures(None, RetryPolicy())  # type: ignore[arg-type]  # never records here
    dispatcher = Dispatcher(publisher, topics, failures, _Marker())  # type: ignore[arg-type]
    async with anyio.create_task_group() as group:
        group.start_soon(dispatcher.send_round, [row(1), row(2)], lambda: True)
        group.start_soon(dispatcher.send_round, [row(3)], lambda: True)
        await anyio.wait_all_tasks_blocked()  # round 2 routed: waiting, or (the bug) sent
        assert topics.lookups == 2
        topics.release.set()
    assert publisher.sent == [b"1", b"2", b"3"]
