"""Helpers of the consumer-runner broker tests: two small contexts, their app, producers, checks.

``depot`` owns ParcelBooked (version 2; version 1 is upcast) and ParcelNoted; ``courier``
handles ParcelBooked twice: ``record_parcel`` (sync, writes a ``runner_applied`` row and publishes
CourierAssigned in the runner's transaction) and ``tally_parcel`` (async, counts in memory).
A ParcelBooked with ``poison=True`` makes ``record_parcel`` raise on every attempt.

``worker_app`` is the application factory a worker subprocess loads (``--app``); it reads
RUNNER_TEST_* environment variables.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

import anyio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, create_engine, func, select
from sqlalchemy.orm import sessionmaker

from engine.codec import Headers, encode
from engine.contexts import BoundedContext
from engine.events import DomainEvent
from engine.modes import Mode
from engine.registry import EventRegistry
from engine.runner import ConsumerRunner
from engine.seam import EventSeam
from engine.settings import (
    ConsumerSettings,
    EventSeamSettings,
    KafkaSettings,
    RelaySettings,
    TopicSettings,
)
from outbox.inbox_table import inbox
from outbox.kafka import KafkaTopicAdmin
from outbox.table import metadata as eventseam_metadata
from outbox.topics import TopicSpec
from tests.kafka_broker import REPO_ROOT

if TYPE_CHECKING:
    import subprocess
    import uuid
    from collections.abc import AsyncIterator, Iterator, Sequence
    from pathlib import Path

    from engine.handler_context import HandlerContext
    from engine.types import Middleware

PARTITIONS = 3
#: The application factory worker subprocesses load (``--app``).
WORKER_APP = "tests.broker.runner_conftest:worker_app"
BOOKED = "tests.runner.ParcelBooked"


class ParcelBooked(DomainEvent, name=BOOKED, version=2):
    """A parcel was booked at the depot (v2 added ``weight_grams``; v1 had ``weight_kg``)."""

    n: int
    weight_grams: int = 0
    poison: bool = False


class ParcelNoted(DomainEvent, name="tests.runner.ParcelNoted", version=1):
    """A note was attached to a parcel (no courier handler subscribes to it)."""

    n: int


class CourierAssigned(DomainEvent, name="tests.runner.CourierAssigned", version=1):
    """The courier took a booked parcel (the follow-up of record_parcel)."""

    n: int


class ParcelRejectedError(RuntimeError):
    """Raised by record_parcel for a poison parcel, on every attempt."""


applied_table = Table(
    "runner_applied",
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("handler", String(200), nullable=False),
    Column("event_id", String(40), nullable=False),
    Column("n", Integer, nullable=False),
    Column("weight_grams", Integer, nullable=False),
)

depot = BoundedContext("depot", owns=[ParcelBooked, ParcelNoted])
courier = BoundedContext("courier", owns=[CourierAssigned])
#: Deliveries per event id to each handler in this process (attempts included).
CALLS: dict[str, Counter[uuid.UUID]] = {"record": Counter(), "tally": Counter()}
#: Seconds record_parcel sleeps per event (slows workers down so they can be killed mid-stream).
DELAY = {"seconds": float(os.environ.get("RUNNER_TEST_DELAY", "0"))}


@courier.handler(ParcelBooked, name="record_parcel")
def record_parcel(event: ParcelBooked, ctx: HandlerContext) -> None:
    """Write one runner_applied row and publish CourierAssigned, in the runner's transaction."""
    CALLS["record"][event.event_id] += 1
    if event.poison:
        raise ParcelRejectedError(f"parcel {event.n} is poison")
    if DELAY["seconds"]:
        time.sleep(DELAY["seconds"])
    ctx.session.execute(
        applied_table.insert().values(
            handler="courier.record_parcel",
            event_id=str(event.event_id),
            n=event.n,
            weight_grams=event.weight_grams,
        )
    )
    ctx.publish(CourierAssigned(aggregate_id=event.aggregate_id, n=event.n))


@courier.handler(ParcelBooked, name="tally_parcel")
async def tally_parcel(event: ParcelBooked) -> None:
    """Count the delivery (an async handler without a context)."""
    CALLS["tally"][event.event_id] += 1


def registry() -> EventRegistry:
    """A registry with the v1 -> v2 upcaster of ParcelBooked (kilograms become grams)."""
    events = EventRegistry()

    @events.upcaster(BOOKED, 1)
    def kilograms_to_grams(data: dict[str, Any]) -> dict[str, Any]:
        data = dict(data)
        data["weight_grams"] = int(data.pop("weight_kg", 0) * 1000)
        return data

    return events


def seam_settings(database_url: str, bootstrap: str, prefix: str) -> EventSeamSettings:
    """Settings of the test app: its own topics (prefix), idempotence off for the bundled broker."""
    topics = {"depot": TopicSettings(partitions=PARTITIONS), "courier": TopicSettings(partitions=1)}
    return EventSeamSettings(
        database_url=database_url,
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap, enable_idempotence="off", request_timeout_ms=5000
        ),
        relay=RelaySettings(topic_prefix=prefix),
        contexts={"depot": Mode.BROKER, "courier": Mode.BROKER},
        topics=topics,
    )


def consumer_settings(prefix: str, **overrides: Any) -> ConsumerSettings:
    """Runner settings for the bundled broker: short sessions and fetch waits, quick retries."""
    values: dict[str, Any] = {
        "group_prefix": f"{prefix}g.",
        "max_attempts": 3,
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
        "fetch_max_wait_ms": 20,
        "max_poll_records": 50,
        # two fetches per transaction at most: kills and rebalances land between transactions
        "max_batch_records": 100,
        **overrides,
    }
    return ConsumerSettings(**values)


def create_tables(engine: Engine) -> None:
    """The eventseam tables (outbox, inbox...) and runner_applied."""
    eventseam_metadata.create_all(engine)
    applied_table.metadata.create_all(engine)


def build_seam(
    database_url: str, bootstrap: str, prefix: str, middlewares: Sequence[Middleware] = ()
) -> EventSeam:
    """The test application: depot and courier on ``database_url`` (tables created)."""
    engine = create_engine(database_url)
    create_tables(engine)
    settings = seam_settings(database_url, bootstrap, prefix)
    return EventSeam(
        settings,
        [depot, courier],
        registry=registry(),
        session_factory=sessionmaker(engine),
        middlewares=middlewares,
    )


@contextmanager
def courier_app(
    database_url: str, bootstrap: str, prefix: str, middlewares: Sequence[Middleware] = ()
) -> Iterator[EventSeam]:
    """``build_seam``, its engine disposed afterwards."""
    seam = build_seam(database_url, bootstrap, prefix, middlewares)
    try:
        yield seam
    finally:
        engine_of(seam).dispose()


def worker_app() -> EventSeam:
    """Application factory for worker subprocesses (RUNNER_TEST_DATABASE/_BOOTSTRAP/_PREFIX)."""
    environ = os.environ
    return build_seam(
        environ["RUNNER_TEST_DATABASE"],
        environ["RUNNER_TEST_BOOTSTRAP"],
        environ["RUNNER_TEST_PREFIX"],
    )


def engine_of(seam: EventSeam) -> Engine:
    """The engine behind the test app's session factory."""
    assert seam.session_factory is not None
    bind = seam.session_factory.kw["bind"]
    assert isinstance(bind, Engine)
    return bind


def booked(
    n: int, *, aggregate: str | None = None, poison: bool = False, weight: int = 0
) -> ParcelBooked:
    """A ParcelBooked from depot (source stamped as the engine would)."""
    return ParcelBooked(
        aggregate_id=aggregate or f"parcel-{n % 17}",
        n=n,
        poison=poison,
        weight_grams=weight,
        source="depot",
    )


RawRecord = tuple[bytes | None, bytes, Headers]


def raw(event: DomainEvent) -> RawRecord:
    """``event`` as (key, value, headers), exactly as the relay sends it."""
    encoded = encode(event)
    return encoded.key, encoded.value, encoded.headers


async def produce(
    bootstrap: str, topic: str, records: Sequence[RawRecord], *, partition: int | None = None
) -> Counter[int]:
    """Send ``records`` in order (keyed partitioning unless ``partition``); records per partition.

    The topic is created first (PARTITIONS) when missing: the broker would auto-create it with 4.
    """
    admin = KafkaTopicAdmin(KafkaSettings(bootstrap_servers=bootstrap))
    try:
        await admin.create(TopicSpec(topic, PARTITIONS, 1))
    finally:
        await admin.aclose()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic, value=value, key=key, headers=list(headers), partition=partition
            )
            for key, value, headers in records
        ]
        return Counter([(await future).partition for future in futures])
    finally:
        await producer.stop()


async def committed_offset(bootstrap: str, group: str, topic: str, partition: int) -> int | None:
    """The offset ``group`` committed for ``topic``/``partition``, read by an independent client."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        value = await consumer.committed(TopicPartition(topic, partition))
    finally:
        await consumer.stop()
    return None if value is None else int(value)


def applied_counts(engine: Engine) -> Counter[str]:
    """runner_applied rows per event id (record_parcel's applications)."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(applied_table.c.event_id, func.count()).group_by(applied_table.c.event_id)
        )
        return Counter(dict(rows.all()))


def inbox_counts(engine: Engine) -> Counter[str]:
    """Inbox rows per handler."""
    with engine.connect() as connection:
        rows = connection.execute(select(inbox.c.handler, func.count()).group_by(inbox.c.handler))
        return Counter(dict(rows.all()))


@asynccontextmanager
async def runner_running(
    seam: EventSeam, settings: ConsumerSettings, contexts: Sequence[str] = ("courier",)
) -> AsyncIterator[ConsumerRunner]:
    """A ConsumerRunner started in a task group; stopped gracefully on exit."""
    runner = ConsumerRunner(seam, contexts, settings=settings)
    async with anyio.create_task_group() as group:
        await group.start(runner.run)
        try:
            yield runner
        finally:
            runner.stop()


def dead_letter_topic(prefix: str, handler: str = "courier.record_parcel") -> str:
    """The default dead-letter topic of ``handler``."""
    return f"{prefix}dlq.{handler}"


def worker_environment(database_url: str, bootstrap: str, prefix: str) -> dict[str, str]:
    """Environment of a worker subprocess: the test app's wiring and quick consumer settings."""
    consumer = consumer_settings(prefix).model_dump()
    settings = {
        f"EVENTSEAM_CONSUMER__{name.upper()}": str(value) for name, value in consumer.items()
    }
    return {
        **os.environ,
        **settings,
        "RUNNER_TEST_DATABASE": database_url,
        "RUNNER_TEST_BOOTSTRAP": bootstrap,
        "RUNNER_TEST_PREFIX": prefix,
        "RUNNER_TEST_DELAY": "0.004",
        "PYTHONPATH": str(REPO_ROOT),
    }


@contextmanager
def worker_process(
    environment: dict[str, str], log: Path, *options: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`eventseam worker --context courier [options]` in a subprocess (killed if still running
    at exit)."""
    from tests.reliability.processes import running_worker  # it imports this module's app

    with running_worker(WORKER_APP, ["courier"], environment, log, *options) as process:
        yield process
