"""Item 5: a consumer worker SIGKILLed every few seconds loses nothing and applies nothing twice."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pytest

from tests.reliability.figures import Run, database_name, record_figures
from tests.reliability.stream import Stream, consumed, run_stream
from tests.reliability.verify import DELIVERY_BOUNDS, failed_bounds, order_detail
from tests.reliability.workload import Workload

if TYPE_CHECKING:
    from pathlib import Path

    from outbox.bundled_broker import BundledBroker
    from tests.reliability.scale import Scale

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

#: Seconds a kill cycle takes about (restart, rejoining the group, progress, pause).
CYCLE = 5.0


async def test_worker_sigkilled_every_few_seconds_loses_nothing(
    database_url: str,
    kafka_broker: BundledBroker,
    topic_prefix: str,
    tmp_path: Path,
    scale: Scale,
    seed: int,
) -> None:
    """Events consumed by a worker that is SIGKILLed every few seconds and restarted are each applied exactly once, in per-aggregate order."""
    run, rng = Run(), random.Random(seed)
    stream = Stream(database_url, kafka_broker.bootstrap_servers, topic_prefix, tmp_path)
    figures = await run_stream(
        stream,
        Workload(scale.worker_events, scale.aggregates, rng),
        kill_roles=lambda fleet: ["worker-0"],
        kills=scale.worker_kills,
        rate=scale.worker_events / (scale.worker_kills * CYCLE),
        rng=rng,
        progress=consumed,
        pause=(1.0, 3.0),
    )
    figures["seed"] = seed
    database = database_name(database_url)
    record_figures("5-worker-kills", database, figures, bounds=DELIVERY_BOUNDS, run=run)
    assert figures["kills"] >= scale.worker_kills
    assert failed_bounds(figures, DELIVERY_BOUNDS) == [], (figures, order_detail(stream.records))
    assert set(stream.codes.values()) == {0}, stream.codes
