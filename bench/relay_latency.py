"""Commit -> consumed latency through the outbox relay at a steady 1,000 events/s (PostgreSQL).

    .venv/bin/python -m bench.relay_latency [--rate 1000] [--seconds 20] [--warmup 2] [--reps 3]
        [--modes notify,notify-linger10,poll-100ms,poll-10ms,kafka-only] [--out bench/results]

One run: the bundled broker (or ``EVENTSEAM_BENCH_KAFKA``) and a fresh PostgreSQL database with
the shipped migrations. For each repetition, each mode (in a fresh shuffled order), four
processes on this machine (one clock, ``time.time_ns``):

    producer   commits ONE event per transaction at ``--rate``/s for ``--seconds`` s, open loop
               (transaction i starts at t0 + i/rate, or at once when late): ``engine.begin()`` +
               ``EventSeam.publish`` (outbox.writer, psycopg 3), and notes the time each COMMIT
               returned, by event id;
    relay      outbox.relay.Relay in its own process, default settings except ``poll_interval``;
    consumer   an independent AIOKafkaConsumer (``fetch_max_wait_ms=10``, Tansu holds every fetch
               that long) assigned every partition of a fresh topic, noting when each record
               reached user code (``getmany``), by its ``ce_id`` header;
    the orchestrator, idle meanwhile.

Modes: ``notify``: the NOTIFY trigger installed, poll_interval at its default (0.1 s);
``notify-linger10``: the same with KafkaSettings.linger_ms = 10 instead of its default 5 (fewer,
larger batches for the broker, a longer wait in the relay);
``poll-100ms`` / ``poll-10ms``: the trigger dropped (no NOTIFY at all), poll_interval 0.1 s /
0.01 s. Latency = consumer receive time - producer commit-return time, per event, joined by
event id; the first ``--warmup`` seconds of events are left out. Also reported from the record
timestamps the relay stamps when it adds a record's batch's first record (outbox.record_batch;
ms resolution): commit -> appended by the relay, and appended -> consumed. Reported:
p50/p90/p99/p99.9/max per run, the median of each over repetitions and their range; the relay
process's CPU share and peak RSS. Target (NOTIFY): p99 <= 25 ms. Not a timed test: results go
to ``bench/results/relay_latency.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy import Engine, create_engine, text

from bench.recording import command_line, write_results
from bench.relay_throughput import (
    CONTEXT,
    ItemShipped,
    create_topic,
    delete_topic,
    environment,
    kafka_settings,
    server_info,
    status_mib,
)
from bench.stack import bootstrap_servers, fresh_database
from engine.codec import encode
from engine.contexts import BoundedContext
from engine.modes import Mode
from engine.seam import EventSeam
from engine.settings import EventSeamSettings, RelaySettings, TopicSettings
from outbox import migrate
from outbox.kafka import producer_options
from outbox.notify import DROP_TRIGGER, install_notify_trigger
from outbox.process_tuning import tune_for_relay
from outbox.relay import Relay

if TYPE_CHECKING:
    from collections.abc import Sequence

MODES: Final = {
    "notify": 0.1,
    "notify-linger10": 0.1,
    "poll-100ms": 0.1,
    "poll-10ms": 0.01,
    "kafka-only": 0.0,
}
#: The relay's KafkaSettings.linger_ms per mode (the setting's default where absent).
LINGER_MS: Final = {"notify-linger10": 10}
TARGET_P99_MS: Final = 25.0
FETCH_MAX_WAIT_MS: Final = 10
PERCENTILES: Final = (50, 90, 99, 99.9)

NOTES: Final = (
    "- `kafka-only` is the broker alone (an aiokafka producer sending the same records at the",
    "  same rate, no database, no relay): the floor every relay mode sits on. The bundled broker",
    "  (Tansu, memory storage) holds each fetch for fetch_max_wait_ms (10 ms), so half of that",
    "  is in every p50. Its fetch side also slows down as a topic grows during a run (see the",
    "  drift table, kafka-only included; its produce acknowledgements stay about 0.4 ms p50),",
    "  apparently the more so the more requests and batches it gets: kafka-only sends about one",
    "  record per batch and drifts most, poll-100ms sends ~100 records per round and its broker",
    "  part stays flat (without the relay's linger, notify sent one record per round and its p99",
    "  was 47 ms). Longer runs give higher percentiles; compare the relay's own part",
    "  (commit -> relay append) across modes.",
    "- The machine has 2 cores shared by the producer, the relay, the consumer, PostgreSQL, the",
    "  broker and other engineers' test runs; load bursts show up as tail latency in all modes.",
    "- Commit -> relay append is what the relay adds; the append stamp is the record timestamp",
    "  the relay sets when it adds the first record of the record's batch (1 ms resolution).",
)

orders = BoundedContext(CONTEXT, owns=[ItemShipped])


def quiet_logs() -> None:
    """Warnings and up, to stderr (child processes)."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def settings_for(args: argparse.Namespace, poll_interval: float) -> EventSeamSettings:
    """Settings shared by the producer and the relay of one run."""
    kafka = kafka_settings(args.bootstrap)
    if args.linger_ms is not None:
        kafka = kafka.model_copy(update={"linger_ms": args.linger_ms})
    return EventSeamSettings(
        database_url=args.database,
        kafka=kafka,
        relay=RelaySettings(topic_prefix=args.prefix, poll_interval=poll_interval),
        contexts={CONTEXT: Mode.BROKER},
        topics={CONTEXT: TopicSettings(partitions=args.partitions)},
    )


# -- child processes ----------------------------------------------------------------------------


def run_producer(args: argparse.Namespace) -> None:
    """Commit one event per transaction at ``rate``/s; write {event_id: commit ns} to ``--output``."""
    engine = create_engine(args.database)
    seam = EventSeam(settings_for(args, 0.1), [orders])
    aggregates = [str(uuid.uuid4()) for _ in range(1000)]
    note = "x" * 300
    commits: dict[str, int] = {}
    total, interval = int(args.rate * args.seconds), 1.0 / args.rate
    with engine.begin() as connection:  # warm the pool and the compiled statements
        connection.execute(text("SELECT 1"))
    start = time.perf_counter() + 0.05
    for n in range(total):
        delay = start + n * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        event = ItemShipped(
            aggregate_id=aggregates[n % 1000], order_id=str(n), sku="SKU-1", quantity=1, note=note
        )
        with engine.begin() as connection:
            seam.publish(connection, event)
        commits[str(event.event_id)] = time.time_ns()
    achieved = total / (time.perf_counter() - start)
    engine.dispose()
    Path(args.output).write_text(json.dumps({"commits": commits, "achieved_rate": achieved}))


async def raw_producer_main(args: argparse.Namespace) -> dict[str, Any]:
    """The broker alone: ``producer.send`` of the same records at ``rate``/s (no database).

    Each record's "commit" time is taken just before its send; linger_ms=0, as the relay closes
    its batches at once.
    """
    producer = AIOKafkaProducer(
        **producer_options(kafka_settings(args.bootstrap), idempotent=False) | {"linger_ms": 0}
    )
    await producer.start()
    aggregates = [str(uuid.uuid4()) for _ in range(1000)]
    commits: dict[str, int] = {}
    total, interval = int(args.rate * args.seconds), 1.0 / args.rate
    futures = []
    try:
        start = time.perf_counter() + 0.05
        for n in range(total):
            delay = start + n * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            event = ItemShipped(
                aggregate_id=aggregates[n % 1000],
                order_id=str(n),
                sku="SKU-1",
                quantity=1,
                note="x" * 300,
                source=CONTEXT,
            )
            record = encode(event)
            commits[str(event.event_id)] = time.time_ns()
            futures.append(
                await producer.send(
                    args.topic, record.value, key=record.key, headers=record.headers
                )
            )
        achieved = total / (time.perf_counter() - start)
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return {"commits": commits, "achieved_rate": achieved}


async def relay_main(args: argparse.Namespace) -> dict[str, Any]:
    """Run the relay until SIGTERM; report CPU seconds and peak RSS."""
    relay = Relay(settings_for(args, args.poll_interval))
    tune_for_relay()  # as the relay command does (outbox.process_tuning)
    stop = anyio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with anyio.create_task_group() as group:
        await group.start(relay.run)
        cpu, started = time.process_time(), time.perf_counter()
        print("ready", flush=True)
        await stop.wait()
        result = {
            "cpu_s": time.process_time() - cpu,
            "seconds": time.perf_counter() - started,
            "peak_rss_mib": status_mib("VmHWM"),
        }
        relay.stop()
    return result


async def consumer_main(args: argparse.Namespace) -> dict[str, Any]:
    """Read every partition from the start until SIGTERM; {ce_id: [receive ns, record ms]}."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=args.bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    stop = anyio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    received: dict[str, list[int]] = {}
    await consumer.start()
    try:
        assigned = [TopicPartition(args.topic, p) for p in range(args.partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        await consumer.getmany(timeout_ms=200)
        print("ready", flush=True)
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100)
            now = time.time_ns()
            for records in batches.values():
                for record in records:
                    event_id = dict(record.headers)["ce_id"].decode()
                    received[event_id] = [now, record.timestamp]
    finally:
        await consumer.stop()
    return {"received": received}


def child(args: argparse.Namespace) -> None:
    """Subprocess entry: producer, relay or consumer; results to ``--output``."""
    quiet_logs()
    if args.child == "producer":
        run_producer(args)
        return
    main_of = {"relay": relay_main, "consumer": consumer_main, "raw-producer": raw_producer_main}[
        args.child
    ]
    result = asyncio.run(main_of(args))
    Path(args.output).write_text(json.dumps(result))


# -- orchestration -------------------------------------------------------------------------------


def spawn(name: str, args: argparse.Namespace, output: Path, **extra: Any) -> subprocess.Popen[str]:
    """Start child ``name``; its results go to ``output``."""
    command = [
        sys.executable,
        "-m",
        "bench.relay_latency",
        "--child",
        name,
        "--bootstrap",
        args.bootstrap,
        "--database",
        args.database,
        "--prefix",
        args.prefix,
        "--topic",
        args.topic,
        "--partitions",
        str(args.partitions),
        "--rate",
        str(args.rate),
        "--seconds",
        str(args.seconds),
        "--output",
        str(output),
    ]
    for key, value in extra.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path.cwd())},
    )


def wait_ready(process: subprocess.Popen[str], name: str) -> None:
    """Block until ``process`` printed ``ready``."""
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "ready":
        raise RuntimeError(f"{name} did not start (exit code {process.wait()})")


def stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM and wait."""
    process.send_signal(signal.SIGTERM)
    process.wait(60)


def prepare(engine: Engine, mode: str) -> None:
    """Empty outbox, free leases, and the NOTIFY trigger present only in ``notify`` mode."""
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE eventseam_outbox"))
        connection.execute(text("UPDATE eventseam_relay_lease SET owner = NULL, expires_at = 0"))
        connection.execute(text("DELETE FROM eventseam_relay_member"))
        connection.execute(text(DROP_TRIGGER))
    if mode.startswith("notify"):
        install_notify_trigger(engine)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE eventseam_outbox"))


def one_run(args: argparse.Namespace, engine: Engine, mode: str, workdir: Path) -> dict[str, Any]:
    """One mode once: relay + consumer up, then the producer; joined latencies."""
    prepare(engine, mode)
    args.prefix = f"l{uuid.uuid4().hex[:8]}."
    args.topic = f"{args.prefix}{CONTEXT}"
    anyio.run(create_topic, args.bootstrap, args.topic, args.partitions)
    files = {name: workdir / f"{name}.json" for name in ("producer", "relay", "consumer")}
    kafka_only = mode == "kafka-only"
    relay = None
    if not kafka_only:
        lingers = {"linger_ms": LINGER_MS[mode]} if mode in LINGER_MS else {}
        relay = spawn("relay", args, files["relay"], poll_interval=MODES[mode], **lingers)
    consumer = spawn("consumer", args, files["consumer"])
    try:
        if relay is not None:
            wait_ready(relay, "relay")
        wait_ready(consumer, "consumer")
        load = os.getloadavg()[0]
        producer = spawn("raw-producer" if kafka_only else "producer", args, files["producer"])
        if producer.wait(args.seconds * 5 + 60) != 0:
            raise RuntimeError("the producer failed")
        time.sleep(1.0)  # the last events reach the consumer (well above any latency seen)
    finally:
        for process in (relay, consumer):
            if process is not None and process.poll() is None:
                stop(process)
    produced = json.loads(files["producer"].read_text())
    received = json.loads(files["consumer"].read_text())["received"]
    result = analyse(produced["commits"], received, args.warmup, args.rate)
    result |= {
        "mode": mode,
        "poll_interval": MODES[mode],
        "achieved_rate": produced["achieved_rate"],
        "load_before": load,
        "relay": None if kafka_only else json.loads(files["relay"].read_text()),
    }
    anyio.run(delete_topic, args.bootstrap, args.topic)
    return result


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p90/p99/p99.9 and max of ``values`` (nearest rank)."""
    ordered = sorted(values)
    result = {
        f"p{p:g}": ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] for p in PERCENTILES
    }
    result["max"] = ordered[-1]
    return result


def analyse(
    commits: dict[str, int], received: dict[str, list[int]], warmup: float, rate: float
) -> dict[str, Any]:
    """Latency statistics (ms) of the events committed after the warm-up."""
    ordered = sorted(commits.items(), key=lambda item: item[1])
    measured = ordered[int(warmup * rate) :]
    missing = [event_id for event_id, _ in measured if event_id not in received]
    total, to_relay, to_consumer = [], [], []
    for event_id, committed in measured:
        if event_id in received:
            got, stamped_ms = received[event_id]
            total.append((got - committed) / 1e6)
            to_relay.append(stamped_ms - committed / 1e6)
            to_consumer.append(got / 1e6 - stamped_ms)
    quarter = max(1, len(total) // 4)
    windows = [percentiles(total[i * quarter : (i + 1) * quarter]) for i in range(4)]
    return {
        "events": len(measured),
        "missing": len(missing),
        "latency_by_quarter_ms": [{"p50": w["p50"], "p99": w["p99"]} for w in windows],
        "latency_ms": percentiles(total),
        "commit_to_relay_append_ms": percentiles(to_relay),
        "relay_append_to_consumed_ms": percentiles(to_consumer),
    }


def measure(
    args: argparse.Namespace, engine: Engine, workdir: Path
) -> dict[str, list[dict[str, Any]]]:
    """``--reps`` repetitions of every mode, in a fresh shuffled order each time."""
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in args.modes}
    shuffle = random.Random(99).shuffle
    for rep in range(args.reps):
        order = list(args.modes)
        shuffle(order)
        for mode in order:
            result = one_run(args, engine, mode, workdir)
            result["rep"] = rep
            runs[mode].append(result)
            lat = result["latency_ms"]
            print(
                f"rep {rep + 1}/{args.reps} {mode:10s} p50 {lat['p50']:6.2f} p99 {lat['p99']:6.2f} "
                f"max {lat['max']:7.2f} ms, missing {result['missing']}, rate "
                f"{result['achieved_rate']:.0f}/s (load {result['load_before']:.2f})",
                file=sys.stderr,
            )
    return runs


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per mode: the median over repetitions of each statistic, and its range."""
    summary: dict[str, Any] = {}
    for mode, results in runs.items():
        row: dict[str, Any] = {}
        for part in ("latency_ms", "commit_to_relay_append_ms", "relay_append_to_consumed_ms"):
            row[part] = {
                stat: {
                    "median": statistics.median(r[part][stat] for r in results),
                    "min": min(r[part][stat] for r in results),
                    "max": max(r[part][stat] for r in results),
                }
                for stat in results[0][part]
            }
        row["missing"] = sum(r["missing"] for r in results)
        relays = [r["relay"] for r in results if r["relay"]]
        row["relay_cpu_share"] = (
            statistics.median(r["cpu_s"] / r["seconds"] for r in relays) if relays else None
        )
        row["relay_peak_rss_mib"] = max(r["peak_rss_mib"] for r in relays) if relays else None
        row["achieved_rate"] = statistics.median(r["achieved_rate"] for r in results)
        summary[mode] = row
    return summary


def render(result: dict[str, Any]) -> str:
    """The results page."""
    env, summary = result["environment"], result["summary"]
    lines = [
        "# Relay latency: commit -> consumed at a steady rate (PostgreSQL, Kafka)",
        "",
        f"- Command: `{result['command']}`",
        f"- Date: {result['date']}",
        f"- Machine: {env['cpus']} CPUs ({env['cpu']}), shared with other engineers' runs; "
        f"Python {env['python']}, aiokafka {env['aiokafka']}, asyncpg {env['asyncpg']}",
        f"- Database: {env['server']}; broker: {env['broker']}",
        f"- {result['rate']:,} events/s, one per transaction, for {result['seconds']} s per run "
        f"(first {result['warmup']} s left out); topic of {result['partitions']} partitions, fresh "
        f"per run; consumer fetch_max_wait_ms={FETCH_MAX_WAIT_MS}; {result['reps']} interleaved "
        f"repetitions; load average {result['load_before']:.2f} before, {result['load_after']:.2f} after",
        "- The relay's marking connection runs with `synchronous_commit = off` "
        "(outbox.claim.ASYNC_COMMIT); the producer's commits use the server default.",
        "- The relay runs with default settings but poll_interval; caught up, it fetches "
        "KafkaSettings.linger_ms (5 ms) after the first wake-up (NOTIFY) it waited for.",
        "",
        "Commit -> consumed, ms (median over repetitions; range in brackets):",
        "",
        "| mode | p50 | p90 | p99 | p99.9 | max | missing | commits/s reached | relay CPU | relay peak RSS | target p99 <= 25 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for mode, row in summary.items():
        lat = row["latency_ms"]
        cells = [
            f"{lat[s]['median']:.1f} [{lat[s]['min']:.1f}-{lat[s]['max']:.1f}]"
            for s in ("p50", "p90", "p99", "p99.9", "max")
        ]
        verdict = ""
        if mode.startswith("notify"):
            verdict = "met" if lat["p99"]["median"] <= TARGET_P99_MS else "NOT met"
            if row["achieved_rate"] < 0.95 * result["rate"]:
                verdict += " (producer below the target rate: machine overloaded)"
        cpu, rss = row["relay_cpu_share"], row["relay_peak_rss_mib"]
        lines.append(
            f"| {mode} | {' | '.join(cells)} | {row['missing']} | {row['achieved_rate']:,.0f} | "
            f"{'-' if cpu is None else f'{cpu * 100:.0f} %'} | "
            f"{'-' if rss is None else f'{rss:.0f} MiB'} | {verdict} |"
        )
    lines += [
        "",
        "Where the time goes (from the record timestamp the relay stamps when it adds the first",
        "record of the record's batch; ms resolution, so +-1 ms):",
        "",
        "| mode | commit -> relay append p50 / p99 | relay append -> consumed p50 / p99 |",
        "| --- | ---: | ---: |",
    ]
    for mode, row in summary.items():
        a, b = row["commit_to_relay_append_ms"], row["relay_append_to_consumed_ms"]
        lines.append(
            f"| {mode} | {a['p50']['median']:.1f} / {a['p99']['median']:.1f} | "
            f"{b['p50']['median']:.1f} / {b['p99']['median']:.1f} |"
        )
    lines += [
        "",
        "Drift within a run: p50 / p99 (ms) per quarter of the measured events, in commit order",
        "(median over repetitions):",
        "",
        "| mode | 1st quarter | 2nd | 3rd | 4th |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for mode, runs in result["runs"].items():
        cells = []
        for index in range(4):
            p50 = statistics.median(r["latency_by_quarter_ms"][index]["p50"] for r in runs)
            p99 = statistics.median(r["latency_by_quarter_ms"][index]["p99"] for r in runs)
            cells.append(f"{p50:.1f} / {p99:.1f}")
        lines.append(f"| {mode} | {' | '.join(cells)} |")
    lines += [
        "",
        "Method: see the docstring of `bench/relay_latency.py`. Every run in `relay_latency.json`.",
        "",
    ]
    lines += ["## Notes", "", *NOTES, ""]
    return "\n".join(lines)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--no-write", action="store_true", help="print only, write no results")
    parser.add_argument(
        "--child", choices=("producer", "raw-producer", "relay", "consumer"), help=argparse.SUPPRESS
    )
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--poll-interval", type=float, default=0.1, help=argparse.SUPPRESS)
    parser.add_argument("--linger-ms", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or, with --child, one of its processes)."""
    args = parse(argv)
    if args.child:
        child(args)
        return 0
    workdir = Path(__file__).parent / f".latency-{os.getpid()}"
    workdir.mkdir(exist_ok=True)
    try:
        with bootstrap_servers() as bootstrap, fresh_database(migrate.upgrade) as database:
            args.bootstrap, args.database = bootstrap, database
            engine = create_engine(database)
            try:
                server = server_info(engine)
                load_before = os.getloadavg()[0]
                runs = measure(args, engine, workdir)
                load_after = os.getloadavg()[0]
            finally:
                engine.dispose()
    finally:
        for path in workdir.iterdir():
            path.unlink()
        workdir.rmdir()
    command = command_line("bench.relay_latency", argv)
    result = {
        "command": command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": environment(server),
        "rate": int(args.rate),
        "seconds": args.seconds,
        "warmup": args.warmup,
        "partitions": args.partitions,
        "reps": args.reps,
        "load_before": load_before,
        "load_after": load_after,
        "summary": summarize(runs),
        "runs": runs,
    }
    markdown = render(result)
    print(markdown)
    if not args.no_write:
        write_results(args.out, "relay_latency", result, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
