"""Item 4: the broker process killed and restarted; the memory broker comes back without its topics.

Events keep being committed while the broker is down. The relay must re-create the topics (with
their configured partitions, not the broker's auto-create default) and deliver every row that was
not published; the worker must rejoin and apply them. Before the kill the worker has applied
everything published so far: records on the lost topics would otherwise be gone with the broker's
memory, a limit of the test broker and not of the relay.

The worker's fetch positions outlive the broker's memory too. Had the new, empty log grown past
them before the worker fetched again, the worker would go on from there and never see the new
log's first records (a real Kafka keeps its log, so this is the test broker's artifact, seen
once in CI). So before each kill a burst moves the positions well past what the new log can
reach before the worker fetches: its first fetch then falls beyond the log end and resets to
the earliest offset.
"""

from __future__ import annotations

import functools
import os
import signal
from typing import TYPE_CHECKING

import pytest

from tests.kafka_broker import partition_count, unique_prefix, wait_for
from tests.reliability.figures import Run, record_figures
from tests.reliability.net_stack import (
    BOUNDS,
    PER_TICK,
    TICK,
    Stack,
    broken,
    proxied_broker,
    wall_clock,
    write_for,
)
from tests.reliability.scale import current_scale

if TYPE_CHECKING:
    from pathlib import Path

    from outbox.bundled_broker import BundledBroker

pytestmark = [pytest.mark.anyio, pytest.mark.broker, pytest.mark.postgres]

#: Seconds the broker stays down per restart, and the restarts.
DOWN = {"full": (5, 30), "reduced": (3,)}


def burst(down_seconds: float) -> int:
    """Events that put the worker's positions past twice what the new log holds when it fetches.

    The new log gets what write_for commits while the broker is down and the seconds until the
    worker fetches again (2 allowed); the aggregates spread both alike over the partitions.
    """
    return int(2 * PER_TICK / TICK * (down_seconds + 2))


def kill(broker: BundledBroker) -> None:
    """SIGKILL the broker's process group (no graceful shutdown), then reap it."""
    process = broker._process
    assert process is not None
    assert process.poll() is None
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)
    broker._process = None


async def test_broker_killed_and_restarted_loses_no_unpublished_row(
    postgres_url: str, tmp_path: Path
) -> None:
    """After SIGKILL and a restart without topics, the relay re-creates them and every row written meanwhile is delivered and applied once."""
    run, downs = Run(), DOWN[current_scale().name]
    figures: dict[str, int | float | str] = {}
    since_last_kill = 0
    prefix = unique_prefix()
    with (
        proxied_broker(tmp_path) as (broker, proxy),
        Stack(postgres_url, proxy.address, prefix, tmp_path) as stack,
    ):
        with stack.relay() as relay, stack.worker() as worker:
            for number, seconds in enumerate(downs, start=1):
                stack.write(burst(seconds))
                await wait_for(
                    lambda: len(stack.applied()) >= len(stack.written),
                    timeout=120,
                    message=f"caught up before the kill; see {tmp_path}",
                )
                since_last_kill = len(stack.written)
                kill(broker)
                seqs = await write_for(stack, seconds)
                unpublished = stack.unpublished()
                restarted = wall_clock()
                broker.start(timeout=60)
                await wait_for(
                    functools.partial(stack.all_published, seqs),
                    timeout=120,
                    message=f"rows written while down published; see {tmp_path}",
                )
                published = sorted(stamp.timestamp() for stamp in stack.published_at(seqs))
                figures |= {
                    f"restart{number}_down_s": seconds,
                    f"restart{number}_unpublished_at_restart": unpublished,
                    f"restart{number}_first_publish_s": round(published[0] - restarted, 3),
                    f"restart{number}_drained_s": round(published[-1] - restarted, 3),
                    f"restart{number}_processes_alive": "yes"
                    if relay.poll() is None and worker.poll() is None
                    else "no",
                }
            await stack.settle()
            figures["depot_partitions"] = await partition_count(proxy.address, f"{prefix}depot")
        figures |= await stack.verify(scope=set(list(stack.written)[since_last_kill:]))
        figures |= {"relay_exit": relay.returncode, "worker_exit": worker.returncode}
    bounds = {**BOUNDS, "depot_partitions": "== 3"}
    record_figures("4-broker-restart", "postgresql", figures, bounds=bounds, run=run)
    assert not broken(figures), (broken(figures), figures, stack.log("relay")[-3000:])
    assert figures["depot_partitions"] == 3, figures  # created by the relay, not auto-created (4)
