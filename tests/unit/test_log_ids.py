"""Log lines of publish, dispatch, consume and relay carry the event's ids (structlog contextvars)."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import pytest
import structlog
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker
from structlog.contextvars import clear_contextvars, merge_contextvars
from structlog.testing import capture_logs

from engine import metrics
from engine.codec import encode, encode_headers
from engine.contexts import BoundedContext
from engine.events import DomainEvent, new_event_id
from engine.modes import Mode
from engine.retry import RetryPolicy
from engine.seam import EventSeam
from engine.settings import BusSettings, ConsumerSettings, EventSeamSettings, RelaySettings
from outbox.claim import FailedRow, PendingRow
from outbox.errors import PermanentPublishError
from outbox.lanes import Dispatcher
from outbox.parked import Failures
from outbox.table import Status, metadata
from tests.unit.fake_records import FakeRecord
from tests.unit.test_runner_batches import FakeConsumer, fake_runner

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, MutableMapping, Sequence
    from pathlib import Path

    from sqlalchemy import Engine

    from engine.handler_context import HandlerContext
    from engine.runner import ConsumerRunner

pytestmark = pytest.mark.anyio

IDS = ("event_id", "event_type", "context", "correlation_id")
log = structlog.get_logger(__name__)


class ReadingTaken(DomainEvent, name="tests.logids.ReadingTaken", version=1):
    """A meter reading was taken."""

    n: int
    fail_times: int = 0


meter = BoundedContext("meter", owns=[ReadingTaken])
billing = BoundedContext("billing")
FAILURES: dict[int, int] = {}


@billing.handler(ReadingTaken, name="bill_reading_on_reading_taken")
def bill_reading_on_reading_taken(event: ReadingTaken, ctx: HandlerContext) -> None:
    """Log a line; fail the first ``fail_times`` attempts."""
    log.info("billing.billing", n=event.n, seen_attempt=ctx.attempt)
    if FAILURES.get(event.n, 0) < event.fail_times:
        FAILURES[event.n] = FAILURES.get(event.n, 0) + 1
        raise ValueError(f"reading {event.n} is negative")


@billing.handler(ReadingTaken, name="note_reading_on_reading_taken")
async def note_reading_on_reading_taken(event: ReadingTaken) -> None:
    """Log a line from an async handler."""
    log.info("billing.noted", n=event.n)


@pytest.fixture(autouse=True)
def fresh_logging() -> Iterator[None]:
    """Default structlog configuration and no bound contextvars, before and after each test."""
    structlog.reset_defaults()
    clear_contextvars()
    FAILURES.clear()
    yield
    structlog.reset_defaults()
    clear_contextvars()


def reading(n: int, fail_times: int = 0) -> ReadingTaken:
    """A ReadingTaken from meter, with a correlation id of its own."""
    return ReadingTaken(
        aggregate_id=f"m{n}",
        n=n,
        fail_times=fail_times,
        source="meter",
        correlation_id=new_event_id(),
    )


def lines(entries: list[MutableMapping[str, Any]], event: str) -> list[MutableMapping[str, Any]]:
    """The captured entries of ``event``."""
    return [entry for entry in entries if entry["event"] == event]


def assert_ids(entry: MutableMapping[str, Any], event: DomainEvent, context: str) -> None:
    """``entry`` carries ``event``'s ids and ``context``."""
    assert {key: entry.get(key) for key in IDS} == {
        "event_id": str(event.event_id),
        "event_type": event.event_name,
        "context": context,
        "correlation_id": str(event.correlation_id),
    }, entry


# -- in-memory bus and publish ---------------------------------------------------------------


async def test_bus_lines_carry_the_event_ids_handler_and_attempt() -> None:
    """Lines logged by a bus handler, and the bus's failure and dead-letter lines, carry the event's ids."""
    settings = EventSeamSettings(bus=BusSettings(max_attempts=2, backoff_initial=0.001))
    seam = EventSeam(settings, [meter, billing])
    ok, poison = reading(1), reading(2, fail_times=5)
    with capture_logs(processors=[merge_contextvars]) as entries:
        async with anyio.create_task_group() as group:
            await group.start(seam.run)
            await seam.bus.publish(ok, poison)
            await seam.join()
            await seam.aclose()
    handler = "billing.bill_reading_on_reading_taken"
    billed = [e for e in lines(entries, "billing.billing") if e["n"] == 2]
    assert len(billed) == 2
    for entry in billed:
        assert_ids(entry, poison, "billing")
        assert entry["handler"] == handler
    assert billed[1]["attempt"] == 2 == billed[1]["seen_attempt"]
    [noted] = [e for e in lines(entries, "billing.noted") if e["n"] == 1]
    assert_ids(noted, ok, "billing")
    [failed] = lines(entries, "bus.handler_failed")
    [dead] = lines(entries, "bus.dead_lettered")
    for entry, attempt in ((failed, 1), (dead, 2)):
        assert_ids(entry, poison, "billing")
        assert (entry["handler"], entry["attempt"]) == (handler, attempt)


def test_undeliverable_events_are_logged_one_line_each_with_their_ids() -> None:
    """When the bus cannot take committed events, each one is logged with its ids."""
    seam = EventSeam(EventSeamSettings(), [meter, billing])
    events: list[DomainEvent] = [reading(1), reading(2)]
    with capture_logs(processors=[merge_contextvars]) as entries:
        seam.deliver_committed(events)
    found = lines(entries, "seam.delivery_failed")
    assert len(found) == 2
    for entry, event in zip(found, events, strict=True):
        assert_ids(entry, event, "meter")


# -- consumer runner --------------------------------------------------------------------------


@asynccontextmanager
async def runner_over(
    engine: Engine, batch: list[FakeRecord]
) -> AsyncIterator[tuple[ConsumerRunner, list[FakeConsumer]]]:
    """A ConsumerRunner of billing over fake consumers serving ``batch``; stopped on exit."""
    settings = EventSeamSettings(
        relay=RelaySettings(topic_prefix="unit."), contexts={"meter": Mode.BROKER}
    )
    seam = EventSeam(settings, [meter, billing], session_factory=sessionmaker(engine))
    consumer_settings = ConsumerSettings(max_attempts=2, backoff_initial=0.001, backoff_max=0.002)
    async with fake_runner(seam, ["billing"], [batch], consumer_settings) as (
        runner,
        consumers,
        _,
    ):
        yield runner, consumers


async def test_runner_lines_carry_the_event_ids_handler_and_attempt(tmp_path: Path) -> None:
    """Lines logged by handlers run from Kafka, and the runner's failure and dead-letter lines, carry the event's ids."""
    engine = create_engine(f"sqlite:///{tmp_path / 'runner.db'}")
    metadata.create_all(engine)
    ok, poison = reading(1), reading(2, fail_times=5)
    batch = []
    for offset, event in enumerate((ok, poison)):
        encoded = encode(event)
        batch.append(
            FakeRecord("unit.meter", 0, offset, encoded.key, encoded.value, encoded.headers)
        )
    try:
        with capture_logs(processors=[merge_contextvars]) as entries:
            async with runner_over(engine, batch) as (runner, consumers):
                deadline = time.monotonic() + 10
                while not all(consumer.commits for consumer in consumers):
                    assert time.monotonic() < deadline, "the runner never committed"
                    await anyio.sleep(0.01)
                stats = runner.stats()
    finally:
        engine.dispose()
    assert stats["billing.bill_reading_on_reading_taken"].dead_lettered == 1
    handler = "billing.bill_reading_on_reading_taken"
    billed = [e for e in lines(entries, "billing.billing") if e["n"] == 2]
    assert billed
    for entry in billed:
        assert_ids(entry, poison, "billing")
        assert entry["handler"] == handler
        assert entry["attempt"] == entry["seen_attempt"]
    [noted] = [e for e in lines(entries, "billing.noted") if e["n"] == 1]
    assert_ids(noted, ok, "billing")
    assert noted["handler"] == "billing.note_reading_on_reading_taken"
    failures = lines(entries, "consumer.handler_failed")
    [dead] = lines(entries, "consumer.dead_lettered")
    for entry in [*failures, dead]:
        assert_ids(entry, poison, "billing")
        assert entry["handler"] == handler
    assert dead["attempts"] == 2


# -- relay ------------------------------------------------------------------------------------


class _Claims:
    """Claims.record_failure of a row at its last attempt: the row is parked."""

    async def record_failure(
        self, seqs: Sequence[int], error: str, *, max_attempts: int
    ) -> list[FailedRow]:
        return [FailedRow(seq, PARKED_ID, "m7", max_attempts, Status.PARKED) for seq in seqs]


class _Topics:
    """A topic the relay may never write to."""

    def name(self, context: str, event_type: str) -> str:
        return f"unit.{context}"

    async def partitions(self, topic: str, context: str) -> int:
        raise PermanentPublishError(topic, "topic authorization failed")

    def forget(self) -> None:
        return None


PARKED_EVENT = reading(7)
PARKED_ID = PARKED_EVENT.event_id


async def test_relay_park_lines_carry_the_event_ids() -> None:
    """A row the relay parks is logged with its event's ids and counted as parked."""
    encoded = encode(PARKED_EVENT)
    row = PendingRow(
        seq=1,
        context="meter",
        key="m7",
        event_type=encoded.event_type,
        payload=encoded.value,
        headers=encode_headers(encoded.headers),
        keyhash=0,
    )
    failures = Failures(_Claims(), RetryPolicy(max_attempts=1))  # type: ignore[arg-type]
    dispatcher = Dispatcher(None, _Topics(), failures, None)  # type: ignore[arg-type]
    labels = {"context": "meter", "outcome": "parked"}
    before = metrics_sample(labels)
    with capture_logs(processors=[merge_contextvars]) as entries:
        await dispatcher.send_round([row], lambda: True)
    [parked] = lines(entries, "outbox.row_parked")
    assert_ids(parked, PARKED_EVENT, "meter")
    assert metrics_sample(labels) == before + 1


def metrics_sample(labels: dict[str, str]) -> float:
    """eventseam_relay_messages_total for ``labels`` (0 when absent)."""
    from prometheus_client import REGISTRY

    assert metrics.available()
    return REGISTRY.get_sample_value("eventseam_relay_messages_total", labels) or 0.0
