"""The figures of a run: what was committed, against what is on the broker and what was applied.

- ``lost``: committed events missing from the topic (``topic_figures``) or never applied by the
  consumer (``applied_figures``, poison events excepted: those are dead-lettered instead).
- ``duplicates``: records on the topic beyond the first one of each event id.
- ``order_violations``: after dropping duplicates (first occurrence kept), records whose
  per-aggregate number is not greater than the previous one of their aggregate; on the topic in
  partition offset order, at the consumer in the order the applied log was written.
- ``applied_twice``: event ids with more than one row in the consumer's applied log.
- ``unpublished``: outbox rows meant for the broker still pending or parked at the end.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING

from sqlalchemy import select

from tests.reliability.app import HANDLER, applied
from tests.reliability.workload import unpublished_rows

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from sqlalchemy import Engine

    from tests.kafka_broker import Record
    from tests.reliability.workload import Written


def _order_violations(sequence: Iterable[tuple[str, int]]) -> int:
    """(aggregate, number) pairs whose number is not above the aggregate's previous one."""
    return len(order_breaks(sequence))


def order_breaks(sequence: Iterable[tuple[str, int]]) -> list[tuple[str, int, int]]:
    """(aggregate, previous highest number, number) for each pair out of order."""
    last: dict[str, int] = {}
    breaks = []
    for aggregate, number in sequence:
        previous = last.get(aggregate, 0)
        if number <= previous:
            breaks.append((aggregate, previous, number))
        last[aggregate] = max(number, previous)
    return breaks


def topic_ids(records: Iterable[Record]) -> list[str]:
    """The event id (``ce_id`` header) of each record."""
    return [(record.header("ce_id") or b"").decode() for record in records]


def topic_figures(records: list[Record], committed: Mapping[str, Written]) -> dict[str, int]:
    """committed, records, lost, unexpected, duplicates, order_violations of one topic's records."""
    seen: set[str] = set()
    duplicates = 0
    firsts: list[tuple[str, int]] = []
    for record, event_id in zip(records, topic_ids(records), strict=True):
        if event_id in seen:
            duplicates += 1
            continue
        seen.add(event_id)
        firsts.append(((record.key or b"").decode(), int(json.loads(record.value)["seq"])))
    return {
        "committed": len(committed),
        "records": len(records),
        "lost": len(committed.keys() - seen),
        "unexpected": len(seen - committed.keys()),
        "duplicates": duplicates,
        "order_violations": _order_violations(firsts),
    }


def applied_log(engine: Engine, handler: str = HANDLER) -> list[tuple[str, str, int]]:
    """(event id, aggregate, number) of each application by ``handler``, in the order written."""
    query = (
        select(applied.c.event_id, applied.c.aggregate, applied.c.seq)
        .where(applied.c.handler == handler)
        .order_by(applied.c.id)
    )
    with engine.connect() as connection:
        return [(str(e), str(a), int(s)) for e, a, s in connection.execute(query)]


def applied_count(engine: Engine, handler: str = HANDLER) -> int:
    """Distinct events ``handler`` applied so far."""
    return len({event_id for event_id, _, _ in applied_log(engine, handler)})


def applied_figures(
    engine: Engine,
    committed: Mapping[str, Written],
    published: set[str] | None = None,
    handler: str = HANDLER,
) -> dict[str, int]:
    """applied, applied_twice, consumer_lost, consumer_order_violations, and (given the ids on
    the topic) published_not_applied / applied_not_published, for ``handler``."""
    log = applied_log(engine, handler)
    counts = Counter(event_id for event_id, _, _ in log)
    firsts: list[tuple[str, int]] = []
    seen: set[str] = set()
    for event_id, aggregate, number in log:
        if event_id not in seen:
            seen.add(event_id)
            firsts.append((aggregate, number))
    wanted = {event_id for event_id, written in committed.items() if not written.poison}
    figures = {
        "applied": len(counts),
        "applied_twice": sum(1 for count in counts.values() if count > 1),
        "consumer_lost": len(wanted - counts.keys()),
        "consumer_order_violations": _order_violations(firsts),
        "unpublished": unpublished_rows(engine),
    }
    if published is not None:
        expected = {event_id for event_id in published if not _poison(committed, event_id)}
        figures["published_not_applied"] = len(expected - counts.keys())
        figures["applied_not_published"] = len(counts.keys() - published)
    return figures


def _poison(committed: Mapping[str, Written], event_id: str) -> bool:
    written = committed.get(event_id)
    return written is not None and written.poison


#: The assertions every delivery scenario makes (item 11 included), as recorded with the figures.
ZERO = "== 0"
DELIVERY_BOUNDS = {
    "lost": ZERO,
    "unexpected": ZERO,
    "order_violations": ZERO,
    "applied_twice": ZERO,
    "consumer_lost": ZERO,
    "consumer_order_violations": ZERO,
    "unpublished": ZERO,
    "published_not_applied": ZERO,
    "applied_not_published": ZERO,
}


def failed_bounds(figures: Mapping[str, object], bounds: Mapping[str, str]) -> list[str]:
    """The bounds ``figures`` break, as "name = value (wanted ...)" lines (empty: all met)."""
    broken = []
    for name, bound in bounds.items():
        if name not in figures:
            continue
        operator, _, limit = bound.partition(" ")
        value = figures[name]
        assert isinstance(value, int | float), f"{name} is not a number: {value!r}"
        ok = value == float(limit) if operator == "==" else value <= float(limit)
        if not ok:
            broken.append(f"{name} = {value} (wanted {bound})")
    return broken


def order_detail(records: list[Record], limit: int = 3) -> str:
    """For the first ``limit`` aggregates out of order on the topic (duplicates dropped): their
    records as ``partition@offset:number``, for a failure message."""
    seen: set[str] = set()
    firsts: list[tuple[Record, str, int]] = []
    for record, event_id in zip(records, topic_ids(records), strict=True):
        if event_id not in seen:
            seen.add(event_id)
            aggregate = (record.key or b"").decode()
            firsts.append((record, aggregate, int(json.loads(record.value)["seq"])))
    breaks = order_breaks((aggregate, number) for _, aggregate, number in firsts)
    broken = list(dict.fromkeys(aggregate for aggregate, _, _ in breaks))
    lines = []
    for aggregate in broken[:limit]:
        trail = [f"{r.partition}@{r.offset}:{n}" for r, a, n in firsts if a == aggregate]
        lines.append(f"{aggregate}: {' '.join(trail)}")
    return "\n".join(lines)
