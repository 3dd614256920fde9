"""Item 6: poison events are dead-lettered after exactly K attempts, once each, workers killed or not."""

from __future__ import annotations

import random
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from tests.kafka_broker import read_topic
from tests.reliability.figures import Run
from tests.reliability.stream import Stream, check_stream, consumed, run_stream
from tests.reliability.verify import DELIVERY_BOUNDS, applied_log, topic_ids
from tests.reliability.workload import Workload

if TYPE_CHECKING:
    from pathlib import Path

    from outbox.bundled_broker import BundledBroker
    from tests.kafka_broker import Record
    from tests.reliability.scale import Scale

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

#: Handler attempts before the dead-letter topic (ConsumerSettings.max_attempts).
K = 3
CYCLE = 5.0


def after_poison(records: list[Record], poison: set[str]) -> set[str]:
    """Ids of the non-poison records behind a poison record in its partition."""
    first: dict[int, int] = {}
    for record, event_id in zip(records, topic_ids(records), strict=True):
        if event_id in poison:
            first.setdefault(record.partition, record.offset)
    return {
        event_id
        for record, event_id in zip(records, topic_ids(records), strict=True)
        if event_id not in poison and record.offset > first.get(record.partition, record.offset)
    }


async def test_poison_events_are_dead_lettered_once_after_k_attempts(
    database_url: str,
    kafka_broker: BundledBroker,
    topic_prefix: str,
    tmp_path: Path,
    scale: Scale,
    seed: int,
) -> None:
    """Poison events among a stream consumed by a worker that is SIGKILLed meanwhile each get exactly one dead-letter record, marked with K attempts, and their partitions go on."""
    run, rng = Run(), random.Random(seed)
    attempts_log = tmp_path / "attempts.log"
    stream = Stream(
        database_url,
        kafka_broker.bootstrap_servers,
        topic_prefix,
        tmp_path,
        worker_options={
            "RELIABILITY_ATTEMPTS": str(attempts_log),
            "RELIABILITY_MAX_ATTEMPTS": str(K),
        },
    )
    poison = frozenset(rng.sample(range(scale.poison_events), scale.poison_count))
    workload = Workload(scale.poison_events, scale.aggregates, rng, poison=poison)
    figures = await run_stream(
        stream,
        workload,
        kill_roles=lambda fleet: ["worker-0"],
        kills=scale.poison_kills,
        rate=scale.poison_events / (scale.poison_kills * CYCLE),
        rng=rng,
        progress=consumed,
        pause=(0.5, 2.0),
    )
    poison_ids = {event_id for event_id, written in workload.committed.items() if written.poison}
    dead = await read_topic(
        stream.bootstrap, f"{topic_prefix}dlq.sink.apply_tick", expected=len(poison_ids), within=30
    )
    per_event = Counter(topic_ids(dead))
    attempts = Counter(int(record.header("dlq_attempts") or b"0") for record in dead)
    behind = after_poison(stream.records, poison_ids)
    engine = stream.engine()
    applied_ids = {event_id for event_id, _, _ in applied_log(engine)}
    engine.dispose()
    figures |= {
        "poison_events": len(poison_ids),
        "dead_letters": len(dead),
        "poison_without_dead_letter": len(poison_ids - per_event.keys()),
        "poison_with_several_dead_letters": sum(1 for n in per_event.values() if n > 1),
        "dead_letters_of_other_events": len(per_event.keys() - poison_ids),
        "dead_letters_not_after_k_attempts": sum(n for a, n in attempts.items() if a != K),
        "attempts_logged": len(attempts_log.read_text().splitlines()),
        "events_behind_poison": len(behind),
        "behind_poison_not_applied": len(behind - applied_ids),
        "seed": seed,
    }
    bounds = {
        **DELIVERY_BOUNDS,
        "poison_without_dead_letter": "== 0",
        "poison_with_several_dead_letters": "== 0",
        "dead_letters_of_other_events": "== 0",
        "dead_letters_not_after_k_attempts": "== 0",
        "behind_poison_not_applied": "== 0",
    }
    check_stream(stream, "6-poison", figures, bounds, run, kills=scale.poison_kills)
    assert figures["events_behind_poison"] > 0, "a poison event should have events behind it"
