"""Test helpers around the bundled Kafka-protocol broker: start it, read topics back independently.

Readers use their own clients (aiokafka consumers, or confluent-kafka/librdkafka), never the
relay's producer, so what they see is what is really on the broker. Tansu's ``end_offsets`` are
wrong after multi-record batches (DESIGN.md), so readers stop on a record count, not on offsets.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import Connection, Engine, Row, create_engine, select

from engine.codec import EncodedEvent, encode
from engine.events import DomainEvent
from engine.modes import Mode
from engine.settings import EventSeamSettings, KafkaSettings, RelaySettings, TopicSettings
from outbox.bundled_broker import BrokerStartError, BundledBroker
from outbox.lease_table import relay_lease as relay_lease
from outbox.notify import install_notify_trigger
from outbox.relay import Relay
from outbox.table import metadata, outbox
from outbox.writer import write

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence


@dataclass(frozen=True, slots=True)
class Record:
    """One record as read back from the broker."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]

    def header(self, name: str) -> bytes | None:
        """The value of header ``name`` (None when absent)."""
        return dict(self.headers).get(name)


def start_broker() -> BundledBroker:
    """A running bundled broker on a free loopback port; fails the test (never skips) otherwise."""
    broker = BundledBroker()
    try:
        broker.start(timeout=60)
    except BrokerStartError as exc:
        pytest.fail(f"the bundled Kafka broker cannot start: {exc}")
    return broker


def unique_prefix() -> str:
    """A topic prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}."


async def partition_count(bootstrap: str, topic: str) -> int:
    """Partitions of ``topic`` as the broker describes it (0 when it does not exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return len(topics[0]["partitions"]) if topics and topics[0]["error_code"] == 0 else 0


async def read_topic(
    bootstrap: str, topic: str, *, expected: int, within: float = 60.0
) -> list[Record]:
    """Read ``topic`` from the beginning with aiokafka until ``expected`` records (or ``within`` s).

    Keeps reading briefly after the count is reached so duplicates would show.
    """
    partitions = await partition_count(bootstrap, topic)
    assert partitions, f"topic {topic} does not exist"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10
    )
    await consumer.start()
    records: list[Record] = []
    try:
        assigned = [TopicPartition(topic, number) for number in range(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        deadline = time.monotonic() + within
        settle_until: float | None = None
        while time.monotonic() < deadline and (
            settle_until is None or time.monotonic() < settle_until
        ):
            batches = await consumer.getmany(timeout_ms=100, max_records=10_000)
            for batch in batches.values():
                records.extend(
                    Record(r.topic, r.partition, r.offset, r.key, r.value, list(r.headers))
                    for r in batch
                )
            if settle_until is None and len(records) >= expected:
                settle_until = time.monotonic() + 0.3
    finally:
        await consumer.stop()
    return sorted(records, key=lambda record: (record.partition, record.offset))


def read_topic_confluent(
    bootstrap: str, topic: str, *, partitions: int, expected: int, within: float = 60.0
) -> list[Record]:
    """Read ``topic`` from the beginning with confluent-kafka (librdkafka) until ``expected`` records."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer
    from confluent_kafka import TopicPartition as ConfluentPartition

    settings = {
        "bootstrap.servers": bootstrap,
        "group.id": f"check-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
    }
    consumer = Consumer(settings)
    records: list[Record] = []
    try:
        consumer.assign(
            [ConfluentPartition(topic, number, OFFSET_BEGINNING) for number in range(partitions)]
        )
        deadline = time.monotonic() + within
        while len(records) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and not message.error():
                records.append(_confluent_record(topic, message))
    finally:
        consumer.close()
    return sorted(records, key=lambda record: (record.partition, record.offset))


def _confluent_record(topic: str, message: Any) -> Record:
    headers = [(str(name), bytes(value or b"")) for name, value in (message.headers() or [])]
    return Record(
        topic,
        int(message.partition()),
        int(message.offset()),
        message.key(),
        bytes(message.value()),
        headers,
    )


def produce_confluent(bootstrap: str, topic: str, keys: list[bytes]) -> dict[bytes, int]:
    """Produce one record per key with librdkafka's murmur2_random partitioner; key -> partition."""
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "enable.idempotence": False,
        }
    )
    placed: dict[bytes, int] = {}

    def delivered(error: object, message: object) -> None:
        assert error is None, error
        placed[message.key()] = message.partition()  # type: ignore[attr-defined]

    for key in keys:
        producer.produce(topic, value=b"probe", key=key, on_delivery=delivered)
    producer.flush(30)
    return placed


async def wait_for(
    condition: Callable[[], object],
    *,
    timeout: float = 60.0,  # noqa: ASYNC109 - a polling budget for a sync condition, not a cancel scope
    interval: float = 0.05,
    message: str | Callable[[], str] = "",
    in_thread: bool = False,
) -> None:
    """Poll ``condition()`` until truthy; fail after ``timeout`` seconds.

    ``message``: what the failure says, or a function that says it then (the state it reached).

    ``in_thread``: call it in a worker thread, for a condition that queries a database; on the
    loop such a query stalls everything the loop runs (the bus, the runner) while it lasts.
    """
    deadline = time.monotonic() + timeout
    while True:
        met = await anyio.to_thread.run_sync(condition) if in_thread else condition()
        if met:
            return
        if time.monotonic() > deadline:
            said = message() if callable(message) else message
            pytest.fail(f"condition not met within {timeout} s: {said or condition}")
        await anyio.sleep(interval)


# --- outbox side: events written with the real writer, rows inspected directly -----------------


class ItemAdded(DomainEvent, name="tests.broker.ItemAdded", version=1):
    """The event every broker test relays."""

    n: int
    note: str = ""


def item(aggregate_id: str, n: int, *, note: str = "", context: str = "orders") -> ItemAdded:
    """An ItemAdded of ``aggregate_id`` published by ``context``."""
    return ItemAdded(aggregate_id=aggregate_id, n=n, note=note, source=context)


def write_events(
    engine: Engine | Connection, events: Sequence[DomainEvent], mode: Mode = Mode.BROKER
) -> list[EncodedEvent]:
    """Write ``events`` to the outbox in one transaction (or in ``engine``'s open one)."""
    encoded = [encode(event, max_bytes=16 * 1024 * 1024) for event in events]
    if isinstance(engine, Engine):
        with engine.begin() as connection:
            write(connection, encoded, mode)
    else:
        write(engine, encoded, mode)
    return encoded


def outbox_rows(engine: Engine) -> list[Row[Any]]:
    """Every outbox row (seq, id, aggregateid, status, attempts, published_at), in seq order."""
    columns = (
        outbox.c.seq,
        outbox.c.id,
        outbox.c.aggregateid,
        outbox.c.status,
        outbox.c.attempts,
        outbox.c.published_at,
    )
    with engine.connect() as connection:
        return list(connection.execute(select(*columns).order_by(outbox.c.seq)))


def create_outbox(url: str) -> Engine:
    """A sync engine on ``url`` with every eventseam table and the NOTIFY trigger created."""
    engine = create_engine(url)
    metadata.create_all(engine)
    install_notify_trigger(engine)
    return engine


def relay_settings(
    database_url: str,
    bootstrap: str,
    prefix: str,
    *,
    partitions: int = 3,
    kafka: dict[str, Any] | None = None,
    **relay: Any,
) -> EventSeamSettings:
    """Settings for a relay under test: fast polling, short leases and backoffs, own topics."""
    relay_values: dict[str, Any] = {
        "poll_interval": 0.05,
        "lease_seconds": 2.0,
        "backoff_initial": 0.05,
        "backoff_max": 0.5,
        "topic_prefix": prefix,
        **relay,
    }
    kafka_values: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "enable_idempotence": "auto",
        "request_timeout_ms": 5000,
        **(kafka or {}),
    }
    topic = TopicSettings(partitions=partitions)
    return EventSeamSettings(
        database_url=database_url,
        kafka=KafkaSettings(**kafka_values),
        relay=RelaySettings(**relay_values),
        contexts={"orders": Mode.BROKER, "payments": Mode.DUAL},
        topics={"orders": topic, "payments": topic},
    )


@asynccontextmanager
async def relay_running(settings: EventSeamSettings, **options: Any) -> AsyncIterator[Relay]:
    """A Relay started in a task group (connected, holding slots); stopped gracefully on exit."""
    relay = Relay(settings, **options)
    async with anyio.create_task_group() as group:
        await group.start(relay.run)
        try:
            yield relay
        finally:
            relay.stop()


# --- relay processes: `eventseam relay` in subprocesses ------------------------------------------

REPO_ROOT = Path(__file__).resolve().parent.parent


def relay_env(database_url: str, bootstrap: str, prefix: str, **relay: object) -> dict[str, str]:
    """Environment for an ``eventseam relay`` process (test speeds, own topics, 3 partitions)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("EVENTSEAM_")}
    values: dict[str, object] = {
        "poll_interval": 0.05,
        "lease_seconds": 2,
        "backoff_initial": 0.05,
        "backoff_max": 0.5,
        **relay,
    }
    env.update({f"EVENTSEAM_RELAY__{name.upper()}": str(value) for name, value in values.items()})
    env.update(
        {
            "EVENTSEAM_DATABASE_URL": database_url,
            "EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "EVENTSEAM_KAFKA__REQUEST_TIMEOUT_MS": "5000",
            "EVENTSEAM_RELAY__TOPIC_PREFIX": prefix,
            "EVENTSEAM_CONTEXTS__ORDERS": "broker",
            "EVENTSEAM_TOPICS__ORDERS__PARTITIONS": "3",
            "PYTHONPATH": str(REPO_ROOT),
        }
    )
    return env


def spawn_relay(
    env: dict[str, str], workdir: Path, name: str, *options: str
) -> subprocess.Popen[bytes]:
    """Start ``eventseam relay --json-logs [options]`` in ``workdir``; output to ``<name>.log``."""
    command = [
        *(sys.executable, "-c", "from engine.cli import main; main()"),
        *("relay", "--json-logs", *options),
    ]
    with open(workdir / f"{name}.log", "wb") as log:
        return subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM ``process`` and wait for its exit code (SIGKILL after ``timeout``)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def slot_owners(engine: Engine) -> dict[str | None, int]:
    """How many slots each relay owner holds (None: free)."""
    with engine.connect() as connection:
        rows = connection.execute(select(relay_lease.c.owner, relay_lease.c.expires_at))
        counts: dict[str | None, int] = defaultdict(int)
        for owner, _ in rows:
            counts[owner] += 1
    return dict(counts)
