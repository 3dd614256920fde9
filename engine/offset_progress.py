"""Which fetched offsets are handled, per partition: what the consumer runner may commit.

engine.handler_worker adds every fetched record and completes each once it is applied,
skipped, passed over or dead-lettered, in any order; ``next`` holds, per partition, the offset
after the handled prefix (the offset to commit). A revoke ``forget``s everything.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .consumer import Partition, Record


class Progress:
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

    def complete_all(self, records: Sequence[Record]) -> None:
        """``complete`` every record of ``records`` (fetched in order per partition)."""
        complete = self.complete
        for record in records:
            complete(record)

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
