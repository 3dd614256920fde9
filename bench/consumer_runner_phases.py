"""The two phases of bench.consumer_runner, each run in a subprocess of its own.

``raw``: a bare aiokafka ``getmany`` loop. ``runner``: a ConsumerRunner with one no-op handler
and its inbox on PostgreSQL. Each returns events per second (first records to the last one
consumed, or applied and committed) and events per CPU-second of its process.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import anyio
import structlog
from aiokafka import AIOKafkaConsumer
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from engine.consumer import KafkaConsumer
from engine.contexts import BoundedContext
from engine.events import DomainEvent
from engine.modes import Mode
from engine.runner import ConsumerRunner
from engine.seam import EventSeam
from engine.settings import ConsumerSettings, EventSeamSettings, KafkaSettings, RelaySettings
from outbox.process_tuning import tune_for_worker

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping, Sequence

    from engine.consumer import Partition, Record

FETCH_MAX_WAIT_MS: Final = 100


class MeterRead(DomainEvent, name="bench.MeterRead", version=1):
    """A small event (~200 B on the wire with its headers)."""

    meter: str
    kwh: int


source = BoundedContext("source", owns=[MeterRead])
sink = BoundedContext("sink")


@sink.handler(MeterRead, name="noop")
def noop(event: MeterRead) -> None:
    """Does nothing (the benchmark measures the runner around it)."""


def peak_rss_mib() -> float:
    """Peak resident set size of this process, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- phases (each runs in a subprocess of its own) ---------------------------------------------


async def raw_phase(
    bootstrap: str, topic: str, events: int, max_records: int
) -> tuple[float, float]:
    """Events per second and per CPU second of a bare getmany loop, first record to last."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        max_poll_records=max_records,
    )
    await consumer.start()
    try:
        count, started, cpu = 0, 0.0, 0.0
        while count < events:
            batches = await consumer.getmany(timeout_ms=1000, max_records=max_records)
            if batches and not started:
                started, cpu = time.perf_counter(), time.process_time()
            count += sum(len(records) for records in batches.values())
        return count / (time.perf_counter() - started), count / (time.process_time() - cpu)
    finally:
        await consumer.stop()


@dataclass
class _Clock:
    """When the runner's first records arrived and when its last one was applied and committed."""

    events: int
    applied: Callable[[], int] = lambda: 0
    first: float = 0.0
    first_cpu: float = 0.0
    last: float = 0.0
    last_cpu: float = 0.0
    done: anyio.Event = field(default_factory=anyio.Event)


class _TimedConsumer(KafkaConsumer):
    """KafkaConsumer noting the first non-empty fetch and the commit after the last event.

    Checking completion on commit costs nothing between batches (polling the runner's stats
    every few milliseconds took ~5 % of the runner process's CPU, measured with py-spy).
    """

    def __init__(self, *args: Any, clock: _Clock, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock

    async def fetch(self, wait: float) -> Sequence[Record]:
        records = await super().fetch(wait)
        if records and not self.clock.first:
            self.clock.first, self.clock.first_cpu = time.perf_counter(), time.process_time()
        return records

    async def commit(self, offsets: Mapping[Partition, int]) -> bool:
        accepted = await super().commit(offsets)
        clock = self.clock
        if not clock.last and accepted and clock.applied() >= clock.events:
            clock.last, clock.last_cpu = time.perf_counter(), time.process_time()
            clock.done.set()
        return accepted


async def runner_phase(
    bootstrap: str,
    prefix: str,
    database_url: str,
    events: int,
    max_records: int,
    max_batch_records: int = 0,
) -> tuple[float, float]:
    """Events per second and per CPU second of a ConsumerRunner (no-op handler, PostgreSQL inbox)."""
    engine = create_engine(database_url)
    settings = EventSeamSettings(
        database_url=database_url,
        kafka=KafkaSettings(bootstrap_servers=bootstrap, enable_idempotence="off"),
        relay=RelaySettings(topic_prefix=prefix),
        contexts={"source": Mode.BROKER},
    )
    seam = EventSeam(settings, [source, sink], session_factory=sessionmaker(engine))
    options = ConsumerSettings(
        group_prefix=f"bench-runner-{uuid.uuid4().hex[:8]}.",
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        max_poll_records=max_records,
        **({"max_batch_records": max_batch_records} if max_batch_records else {}),
    )
    clock = _Clock(events)

    def consumers(group_id: str, topics: Sequence[str]) -> KafkaConsumer:
        return _TimedConsumer(
            settings.kafka, options, group_id=group_id, topics=topics, clock=clock
        )

    runner = ConsumerRunner(seam, ["sink"], settings=options, consumers=consumers)
    (worker,) = runner.workers
    clock.applied = lambda: worker.stats.applied
    try:
        async with anyio.create_task_group() as group:
            await group.start(runner.run)
            await clock.done.wait()
            runner.stop()
        return (
            events / (clock.last - clock.first),
            events / (clock.last_cpu - clock.first_cpu),
        )
    finally:
        engine.dispose()


def run_phase(arguments: argparse.Namespace) -> None:
    """Subprocess entry: run one phase; print events_per_s, events_per_cpu_s, peak_rss_mib (JSON)."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    if arguments.gc_freeze:  # as `eventseam worker` does once the application is loaded
        tune_for_worker()
    if arguments.phase == "raw":
        rate, cpu_rate = anyio.run(
            raw_phase,
            arguments.bootstrap,
            f"{arguments.prefix}source",
            arguments.events,
            arguments.max_poll_records,
        )
    else:
        rate, cpu_rate = anyio.run(
            runner_phase,
            arguments.bootstrap,
            arguments.prefix,
            arguments.database,
            arguments.events,
            arguments.max_poll_records,
            arguments.max_batch_records,
        )
    result = {"events_per_s": rate, "events_per_cpu_s": cpu_rate, "peak_rss_mib": peak_rss_mib()}
    print(json.dumps(result))
