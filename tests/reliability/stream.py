"""One delivery scenario: relays and workers running while events are written and processes killed.

``run_stream`` starts ``relays`` relay processes and ``workers`` worker processes of the test
application, writes the workload at a steady rate, SIGKILLs random processes among
``kill_roles`` (``chaos``), waits until the outbox is drained and the consumer applied every
event, stops everything with SIGTERM and returns the figures (tests/reliability/verify.py):
what was committed against the topic and against the consumer's applied log.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from tests.kafka_broker import Record, read_topic, wait_for
from tests.reliability.app import create_database, worker_environment
from tests.reliability.figures import database_name, record_figures
from tests.reliability.processes import Fleet, chaos, relay_environment
from tests.reliability.verify import (
    applied_count,
    applied_figures,
    failed_bounds,
    order_detail,
    topic_figures,
    topic_ids,
)
from tests.reliability.workload import Workload, pending_rows

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from sqlalchemy import Engine

    from tests.reliability.figures import Figure, Run

APP = "tests.reliability.app:worker_app"


@dataclass
class Stream:
    """What a stream scenario runs against, and what it leaves for checks."""

    database_url: str
    bootstrap: str
    prefix: str
    workdir: Path
    relays: int = 1
    workers: int = 1
    relay_options: dict[str, object] = field(default_factory=dict)
    worker_options: dict[str, str] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)
    codes: dict[str, int] = field(default_factory=dict)

    @property
    def topic(self) -> str:
        """The application's topic."""
        return f"{self.prefix}stream"

    def engine(self) -> Engine:
        """A sync engine on the scenario's database (tables created); dispose it after use."""
        return create_database(self.database_url)

    def fleet(self) -> Fleet:
        """The relays ("relay-N") and workers ("worker-N"), started."""
        fleet = Fleet(self.workdir)
        relay_env = relay_environment(
            self.database_url, self.bootstrap, self.prefix, **self.relay_options
        )
        worker_env = worker_environment(
            self.database_url, self.bootstrap, self.prefix, **self.worker_options
        )
        for number in range(self.relays):
            fleet.add_relay(f"relay-{number}", relay_env)
        for number in range(self.workers):
            fleet.add_worker(f"worker-{number}", APP, ["sink"], worker_env)
        return fleet


async def run_stream(
    stream: Stream,
    workload: Workload,
    *,
    kill_roles: Callable[[Fleet], list[str]],
    kills: int,
    rate: float,
    rng: random.Random,
    progress: Callable[[Engine, Workload], int],
    pause: tuple[float, float] = (0.2, 1.5),
) -> dict[str, int]:
    """Run the scenario (see the module docstring); its figures, ``kills`` included."""
    engine = create_database(stream.database_url)
    try:
        return await _run(stream, workload, engine, kill_roles, kills, rate, rng, progress, pause)
    finally:
        engine.dispose()


def check_stream(
    stream: Stream,
    scenario: str,
    figures: Mapping[str, Figure],
    bounds: Mapping[str, str],
    run: Run,
    *,
    kills: int,
) -> None:
    """Record the figures of ``scenario``, then assert at least ``kills`` kills, every bound and clean exits."""
    record_figures(scenario, database_name(stream.database_url), figures, bounds=bounds, run=run)
    assert int(figures["kills"]) >= kills, figures
    assert failed_bounds(figures, bounds) == [], (figures, order_detail(stream.records))
    assert set(stream.codes.values()) == {0}, stream.codes


async def _run(
    stream: Stream,
    workload: Workload,
    engine: Engine,
    kill_roles: Callable[[Fleet], list[str]],
    kills: int,
    rate: float,
    rng: random.Random,
    progress: Callable[[Engine, Workload], int],
    pause: tuple[float, float],
) -> dict[str, int]:
    fleet = stream.fleet()
    expected = workload.events - len(workload.poison)  # poison events are dead-lettered
    try:
        async with anyio.create_task_group() as group:
            write = functools.partial(workload.write, engine, rate=rate)
            group.start_soon(functools.partial(anyio.to_thread.run_sync, write))
            await wait_for(lambda: len(workload.committed) > 0, message="first events written")
            made = await chaos(
                fleet,
                kill_roles(fleet),
                kills=kills,
                progress=lambda: progress(engine, workload),
                working=workload.busy,
                done=lambda: not workload.busy() and applied_count(engine) >= expected,
                rng=rng,
                pause=pause,
            )
        await wait_for(lambda: pending_rows(engine) == 0, timeout=300, message="outbox drained")
        await wait_for(
            lambda: applied_count(engine) >= expected,
            timeout=300,
            message=f"consumers caught up; see {stream.workdir}",
        )
        stream.codes = await fleet.stop()
    finally:
        fleet.kill_all()
    stream.records = await read_topic(
        stream.bootstrap, stream.topic, expected=len(workload.committed), within=120
    )
    figures = {
        "events": len(workload.committed),
        "kills": made,
        **topic_figures(stream.records, workload.committed),
        **applied_figures(engine, workload.committed, set(topic_ids(stream.records))),
    }
    return figures


def published(engine: Engine, workload: Workload) -> int:
    """Progress of the relays: committed events no longer pending."""
    return len(workload.committed) - pending_rows(engine)


def consumed(engine: Engine, workload: Workload) -> int:
    """Progress of the workers: events applied."""
    return applied_count(engine)
