"""Item 2: the relay crashing at each deterministic point of its cycle loses nothing.

For each point in turn (outbox/crash_points.py), events are committed, a relay started with
``EVENTSEAM_TEST_CRASH_AT=<point>@<n>`` SIGKILLs itself the n-th time it reaches the point, and a
fresh relay drains the outbox. One worker process applies everything; the figures are per point
on the topic and for the whole run at the consumer.
"""

from __future__ import annotations

import random
import signal
from typing import TYPE_CHECKING

import anyio.to_thread
import pytest

from outbox.crash_points import POINTS
from tests.kafka_broker import read_topic, spawn_relay, wait_for
from tests.reliability.app import create_database, worker_environment
from tests.reliability.figures import Run, database_name, record_figures
from tests.reliability.processes import Fleet, relay_environment
from tests.reliability.stream import APP
from tests.reliability.verify import (
    DELIVERY_BOUNDS,
    applied_count,
    applied_figures,
    failed_bounds,
    topic_figures,
    topic_ids,
)
from tests.reliability.workload import Workload, Written, pending_rows

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy import Engine

    from outbox.bundled_broker import BundledBroker
    from tests.reliability.scale import Scale

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

#: Rows per relay batch here, so the crash lands after a few batches, with rows still pending.
BATCH_SIZE = 100
#: The relay crashes the n-th time it reaches the point (a mark statement covers many batches).
CRASH_AFTER = {"before_send": 3, "after_send": 3, "after_ack": 3, "after_mark": 1}
TOPIC_BOUNDS = ("lost", "unexpected", "order_violations")


async def crash_and_recover(
    engine: Engine, env: dict[str, str], workdir: Path, point: str, workload: Workload
) -> int:
    """Commit ``workload``, let a relay crash at ``point``, drain with a fresh one; rows pending at the crash."""
    workload.write(engine)
    crashing = spawn_relay(
        {**env, "EVENTSEAM_TEST_CRASH_AT": f"{point}@{CRASH_AFTER[point]}"},
        workdir,
        f"{point}.crash",
    )
    code = await anyio.to_thread.run_sync(crashing.wait, 120)
    assert code == -signal.SIGKILL, (workdir / f"{point}.crash.log").read_text()[-2000:]
    pending_at_crash = pending_rows(engine)
    recovery = Fleet(workdir)
    recovery.add_relay(f"{point}.recover", env)
    try:
        await wait_for(lambda: pending_rows(engine) == 0, timeout=120, message="drained")
        codes = await recovery.stop()
    finally:
        recovery.kill_all()
    assert set(codes.values()) == {0}, codes
    return pending_at_crash


async def test_relay_crash_points_lose_nothing(
    database_url: str,
    kafka_broker: BundledBroker,
    topic_prefix: str,
    tmp_path: Path,
    scale: Scale,
    seed: int,
) -> None:
    """For each crash point (before send, after send, after the ack, after marking), a relay that SIGKILLs itself there mid-backlog and a fresh relay after it deliver every event, in order, applied once."""
    run, rng, bootstrap = Run(), random.Random(seed), kafka_broker.bootstrap_servers
    engine = create_database(database_url)
    env = relay_environment(
        database_url, bootstrap, topic_prefix, batch_size=BATCH_SIZE, lease_seconds=1
    )
    fleet = Fleet(tmp_path)
    fleet.add_worker(
        "worker-0", APP, ["sink"], worker_environment(database_url, bootstrap, topic_prefix)
    )
    workloads = {point: Workload(scale.crash_events, 50, rng, name=point) for point in POINTS}
    figures: dict[str, int] = {"events_per_point": scale.crash_events, "batch_size": BATCH_SIZE}
    try:
        for point, workload in workloads.items():
            pending = await crash_and_recover(engine, env, tmp_path, point, workload)
            figures[f"{point}.pending_at_crash"] = pending
            assert pending > 0, f"{point}: the crash should leave rows pending"
        committed: dict[str, Written] = {}
        for workload in workloads.values():
            committed |= workload.committed
        await wait_for(
            lambda: applied_count(engine) >= len(committed), timeout=120, message="consumed"
        )
        codes = await fleet.stop()
    finally:
        fleet.kill_all()
    records = await read_topic(bootstrap, f"{topic_prefix}stream", expected=len(committed))
    bounds: dict[str, str] = {}
    for point, workload in workloads.items():
        mine = [
            r for r, i in zip(records, topic_ids(records), strict=True) if i in workload.committed
        ]
        measured = topic_figures(mine, workload.committed)
        figures |= {f"{point}.{name}": value for name, value in measured.items()}
        bounds |= {f"{point}.{name}": DELIVERY_BOUNDS[name] for name in TOPIC_BOUNDS}
    consumer = applied_figures(engine, committed, set(topic_ids(records)))
    engine.dispose()
    figures |= consumer | {"seed": seed}
    bounds |= {name: DELIVERY_BOUNDS[name] for name in consumer if name in DELIVERY_BOUNDS}
    record_figures("2-crash-points", database_name(database_url), figures, bounds=bounds, run=run)
    assert failed_bounds(figures, bounds) == [], figures
    assert codes == {"worker-0": 0}
