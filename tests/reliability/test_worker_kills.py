"""Item 5: a consumer worker SIGKILLed every few seconds loses nothing and applies nothing twice."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pytest

from tests.reliability.figures import Run
from tests.reliability.stream import Stream, check_stream, consumed, run_stream
from tests.reliability.verify import DELIVERY_BOUNDS
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
    check_stream(stream, "5-worker-kills", figures, DELIVERY_BOUNDS, run, kills=scale.worker_kills)
