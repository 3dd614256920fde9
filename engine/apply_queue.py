"""Group commit in the consumer runner: decoded batches wait here for the next transaction.

engine.handler_worker fetches and decodes records on the event loop while a transaction runs in
a worker thread. Each decoded batch is ``put`` here; when the transaction in hand ends, the apply
loop ``take``s every batch waiting (up to the caps) and applies them in ONE transaction, so the
per-transaction costs (inbox statement, COMMIT, thread hand-off, offset commit) are shared by
all the events that arrived meanwhile.

Memory bound: ``room`` blocks the fetch loop while the batches waiting hold ``max_records``
records or ``max_bytes`` bytes of record values or more. So at most ``max_records`` plus one
fetch (``max_poll_records``) decoded records wait, besides the transaction in hand, which
``take`` caps at ``max_records`` records and ``max_bytes`` bytes (one batch always goes, whatever
its size).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, NamedTuple

import anyio

if TYPE_CHECKING:
    from .consumer import Record
    from .events import DomainEvent


class Waiting(NamedTuple):
    """One decoded fetch: its rebalance generation, the records to apply and their events
    (same positions), and the bytes of those records' values."""

    generation: int
    records: list[Record]
    events: list[DomainEvent]
    size: int


class ApplyQueue:
    """Batches between the fetch loop (``put``, ``room``) and the apply loop (``take``).

    One producer and one consumer task on the same event loop. ``close`` wakes both for good:
    ``take`` then returns None and ``room`` returns at once.
    """

    def __init__(self, max_records: int, max_bytes: int) -> None:
        if max_records < 1 or max_bytes < 1:
            raise ValueError("the caps must be at least 1")
        self.max_records, self.max_bytes = max_records, max_bytes
        self._waiting: deque[Waiting] = deque()
        self.records = 0  #: events waiting
        self.bytes = 0  #: record bytes waiting
        self._closed = False
        self._work = anyio.Event()
        self._room = anyio.Event()

    def full(self) -> bool:
        """True while the fetch loop must wait (a cap is reached)."""
        return self.records >= self.max_records or self.bytes >= self.max_bytes

    def put(self, batch: Waiting) -> None:
        """Queue a decoded batch (an empty one too: the apply loop then commits the offsets)."""
        self._waiting.append(batch)
        self.records += len(batch.events)
        self.bytes += batch.size
        self._work.set()

    async def room(self) -> None:
        """Return once the queue is below both caps (or closed)."""
        while self.full() and not self._closed:
            if self._room.is_set():
                self._room = anyio.Event()
            await self._room.wait()

    async def take(self) -> list[Waiting] | None:
        """The batches waiting, oldest first, within the caps; waits for one; None once closed."""
        while not self._waiting:
            if self._closed:
                return None
            if self._work.is_set():
                self._work = anyio.Event()
            await self._work.wait()
        if self._closed:
            return None
        taken = [self._waiting.popleft()]
        records, size = len(taken[0].events), taken[0].size
        while self._waiting:
            following = self._waiting[0]
            records += len(following.events)
            size += following.size
            if records > self.max_records or size > self.max_bytes:
                break
            taken.append(self._waiting.popleft())
        self._released(taken)
        return taken

    def clear(self) -> None:
        """Drop every batch waiting (a rebalance: they will be fetched again)."""
        self._released(list(self._waiting))
        self._waiting.clear()

    def close(self) -> None:
        """No more batches: wake ``take`` (it returns None) and ``room`` for good."""
        self._closed = True
        self._work.set()
        self._room.set()

    def _released(self, batches: list[Waiting]) -> None:
        self.records -= sum(len(batch.events) for batch in batches)
        self.bytes -= sum(batch.size for batch in batches)
        if not self.full():
            self._room.set()
