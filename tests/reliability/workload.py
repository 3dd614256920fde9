"""The events a scenario writes: N Ticked over many aggregates, each aggregate numbered 1, 2, 3...

``Workload.write`` commits them to the outbox with the real writer, ``per_transaction`` at a time,
at a steady ``rate`` (events/s) so processes can be killed while events flow; ``committed`` is
what was acknowledged to the caller (every event of a committed transaction), the reference the
figures compare the broker and the consumer against.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from outbox.table import Status, outbox
from tests.kafka_broker import write_events
from tests.reliability.app import Ticked, tick

if TYPE_CHECKING:
    import random

    from sqlalchemy import Engine


@dataclass(frozen=True, slots=True)
class Written:
    """What the reference knows of one committed event."""

    aggregate: str
    seq: int
    poison: bool


@dataclass
class Workload:
    """``events`` Ticked over ``aggregates`` aggregates; the ``poison`` indexes are poison."""

    events: int
    aggregates: int
    rng: random.Random
    poison: frozenset[int] = frozenset()
    per_transaction: int = 100
    #: aggregates are named ``<name>-00042``
    name: str = "agg"
    committed: dict[str, Written] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)

    def ticks(self) -> list[Ticked]:
        """Every event, in publish order (random aggregates, per-aggregate numbers from 1)."""
        numbers: dict[str, int] = {}
        ticks = []
        for index in range(self.events):
            aggregate = f"{self.name}-{self.rng.randrange(self.aggregates):05}"
            numbers[aggregate] = numbers.get(aggregate, 0) + 1
            ticks.append(tick(aggregate, numbers[aggregate], poison=index in self.poison))
        return ticks

    def write(self, engine: Engine, *, rate: float | None = None) -> None:
        """Commit every event (blocking; run it in a thread), at most ``rate`` events/s."""
        started = time.monotonic()
        ticks = self.ticks()
        try:
            for start in range(0, len(ticks), self.per_transaction):
                chunk = ticks[start : start + self.per_transaction]
                write_events(engine, chunk)
                self.committed.update(
                    (str(t.event_id), Written(t.aggregate_id, t.seq, t.poison)) for t in chunk
                )
                if rate:
                    ahead = (start + len(chunk)) / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
        finally:
            self.done.set()

    def busy(self) -> bool:
        """True while events are still being written."""
        return not self.done.is_set()


def pending_rows(engine: Engine) -> int:
    """Outbox rows not published yet (status pending)."""
    with engine.connect() as connection:
        query = select(func.count()).where(outbox.c.status == Status.PENDING)
        return int(connection.execute(query).scalar_one())


def unpublished_rows(engine: Engine) -> int:
    """Outbox rows meant for the broker and not published (pending or parked)."""
    with engine.connect() as connection:
        waiting = (Status.PENDING, Status.PARKED)
        query = select(func.count()).where(outbox.c.status.in_(waiting))
        return int(connection.execute(query).scalar_one())
