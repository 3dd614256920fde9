"""Item 1: the relay SIGKILLed at random while events flow loses nothing and keeps order."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import pytest

from engine.settings import RelaySettings
from tests.reliability.figures import Run
from tests.reliability.stream import Stream, check_stream, published, run_stream
from tests.reliability.verify import DELIVERY_BOUNDS
from tests.reliability.workload import Workload

if TYPE_CHECKING:
    from pathlib import Path

    from outbox.bundled_broker import BundledBroker
    from tests.reliability.scale import Scale

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

#: The relay's batch_size (its default): the issue bounds duplicates by kills x batch size.
BATCH_SIZE = RelaySettings().batch_size
#: Seconds a kill cycle takes about (restart, lease takeover, progress, pause): sets the rate.
CYCLE = 3.0


async def test_relay_sigkilled_at_random_loses_nothing(
    database_url: str,
    kafka_broker: BundledBroker,
    topic_prefix: str,
    tmp_path: Path,
    scale: Scale,
    seed: int,
) -> None:
    """Events written while the relay is SIGKILLed at random and restarted all reach the topic and the consumer once, in per-aggregate order, with duplicates bounded by kills x batch size."""
    run, rng = Run(), random.Random(seed)
    stream = Stream(database_url, kafka_broker.bootstrap_servers, topic_prefix, tmp_path)
    figures = await run_stream(
        stream,
        Workload(scale.relay_events, scale.aggregates, rng),
        kill_roles=lambda fleet: ["relay-0"],
        kills=scale.relay_kills,
        rate=scale.relay_events / (scale.relay_kills * CYCLE),
        rng=rng,
        progress=published,
    )
    figures |= {"batch_size": BATCH_SIZE, "seed": seed}
    bounds = {**DELIVERY_BOUNDS, "duplicates": f"<= {figures['kills'] * BATCH_SIZE}"}
    check_stream(stream, "1-relay-kills", figures, bounds, run, kills=scale.relay_kills)
