"""Item 10: 3 relays and 2 workers at once, killed at random, keep per-aggregate order and lose nothing."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pytest

from tests.reliability.figures import Run
from tests.reliability.stream import Stream, check_stream, consumed, published, run_stream
from tests.reliability.verify import DELIVERY_BOUNDS
from tests.reliability.workload import Workload

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy import Engine

    from outbox.bundled_broker import BundledBroker
    from tests.reliability.scale import Scale

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

CYCLE = 4.0


def moved(engine: Engine, workload: Workload) -> int:
    """Progress of the whole fleet: events published plus events applied."""
    return published(engine, workload) + consumed(engine, workload)


async def test_three_relays_and_two_workers_killed_at_random_keep_order(
    database_url: str,
    kafka_broker: BundledBroker,
    topic_prefix: str,
    tmp_path: Path,
    scale: Scale,
    seed: int,
) -> None:
    """Three relay processes and two worker processes, SIGKILLed at random among them while events flow, deliver every event in per-aggregate order and apply each once."""
    run, rng = Run(), random.Random(seed)
    stream = Stream(
        database_url, kafka_broker.bootstrap_servers, topic_prefix, tmp_path, relays=3, workers=2
    )
    figures = await run_stream(
        stream,
        Workload(scale.many_events, scale.aggregates, rng),
        kill_roles=lambda fleet: sorted(fleet.processes),
        kills=scale.many_kills,
        rate=scale.many_events / (scale.many_kills * CYCLE),
        rng=rng,
        progress=moved,
    )
    figures |= {"relays": 3, "workers": 2, "seed": seed}
    check_stream(stream, "10-many-processes", figures, DELIVERY_BOUNDS, run, kills=scale.many_kills)
