"""Item 9: PostgreSQL unreachable for the relay and the worker (refused, then hanging).

The relay and worker processes reach PostgreSQL through a fault proxy; the application (this
test) keeps committing events directly meanwhile, so a backlog builds up. After each outage the
processes must recover by themselves. Figures per outage: seconds from the restore to the relay's
first and last publish of the backlog and to the worker having applied all of it; per run: lost,
duplicates, unpublished rows, process exits.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING

import pytest

from tests.kafka_broker import start_broker, unique_prefix, wait_for
from tests.reliability.figures import Run, record_figures
from tests.reliability.net_stack import (
    BOUNDS,
    Stack,
    broken,
    proxied_database,
    wall_clock,
    write_for,
)
from tests.reliability.scale import current_scale

if TYPE_CHECKING:
    from pathlib import Path

    from tests.reliability.fault_proxy import FaultProxy

pytestmark = [pytest.mark.anyio, pytest.mark.broker, pytest.mark.postgres]

#: Outage length in seconds: the issue's 10 s in the full run, 3 s in every pytest run.
OUTAGE = {"full": 10, "reduced": 3}


async def outage(stack: Stack, proxy: FaultProxy, kind: str, seconds: float) -> dict[str, float]:
    """One database outage of ``kind`` (refused / hanging) for ``seconds``; its figures."""
    proxy.cut() if kind == "refused" else proxy.hang()
    seqs = await write_for(stack, seconds)
    assert seqs, f"nothing was committed during the {kind} outage"
    ids = set(list(stack.written)[-len(seqs) :])
    restored, restored_monotonic = wall_clock(), time.monotonic()
    proxy.restore()
    await wait_for(
        lambda: ids <= stack.applied().keys(),
        timeout=180,
        message=f"the {kind} backlog applied; see {stack.workdir}",
    )
    applied_after = time.monotonic() - restored_monotonic
    # The relay marks rows after the broker's ack, so the worker may apply them first.
    await wait_for(
        lambda: stack.all_published(seqs),
        timeout=60,
        message=f"the {kind} backlog marked published; see {stack.workdir}",
    )
    published = sorted(stamp.timestamp() for stamp in stack.published_at(seqs))
    return {
        "backlog": len(seqs),
        "relay_first_publish_s": round(published[0] - restored, 3),
        "relay_drained_s": round(published[-1] - restored, 3),
        "worker_applied_all_s": round(applied_after, 2),
    }


async def test_database_unreachable_for_relay_and_worker(postgres_url: str, tmp_path: Path) -> None:
    """With PostgreSQL refused and then hanging for the relay and the worker, both retry, recover and lose nothing."""
    run, seconds = Run(), OUTAGE[current_scale().name]
    figures: dict[str, int | float | str] = {"outage_s": seconds}
    broker = start_broker()
    try:
        with (
            proxied_database(postgres_url) as (through_proxy, proxy),
            Stack(
                postgres_url,
                broker.bootstrap_servers,
                unique_prefix(),
                tmp_path,
                relay_database=through_proxy,
                worker_database=through_proxy,
            ) as stack,
        ):
            faults = [
                (kind, functools.partial(outage, stack, proxy, kind, seconds))
                for kind in ("refused", "hanging")
            ]
            figures |= await stack.through_faults(faults)
    finally:
        broker.stop()
    record_figures("9-database-outage", "postgresql", figures, bounds=BOUNDS, run=run)
    assert not broken(figures), (broken(figures), figures, stack.log("worker")[-3000:])
