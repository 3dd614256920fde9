"""Consumer-runner throughput (no-op handler, inbox on PostgreSQL) against raw aiokafka ``getmany``.

    .venv/bin/python -m bench.consumer_runner [--events 50000] [--partitions 6] [--reps 3]
                                              [--max-poll-records 500] [--max-batch-records N]
                                              [--out bench/results] [--gc-freeze]

One run: the bundled broker (or ``EVENTSEAM_BENCH_KAFKA``), one topic of ``--partitions``
partitions filled once with ``--events`` records encoded by engine.codec (~200 B each: key,
JSON value, CloudEvents headers), and a fresh PostgreSQL database. Then, ``--reps`` times and
alternating, each in a subprocess of its own (so peak RSS is per phase), a fresh consumer group
reads every record:

    raw      AIOKafkaConsumer.getmany(max_records=M) in a loop, nothing else (no decode, no commit)
    runner   ConsumerRunner with one sync no-op handler: decode + validate, inbox claim_many
             + handler calls on PostgreSQL in one transaction per batch, offset commit per batch

Both use fetch_max_wait_ms=100 and max_poll_records=M; the runner applies up to
``--max-batch-records`` (default: ConsumerSettings' default) per transaction (group commit). With ``--gc-freeze`` both
tune the interpreter as ``eventseam worker`` does (``tune_for_worker``: ``gc.freeze()`` of the
startup heap, first threshold 50,000, thread switch interval 1 ms, glibc's mmap/trim thresholds
raised; the default leaves the collector
as a bare script has it, like the figures recorded before). The phases themselves are in
bench.consumer_runner_phases. The clock starts when the first records
reach user code (raw: the first non-empty getmany; runner: its consumer's first non-empty fetch)
and stops when the last record was consumed (raw) or applied and committed (runner: checked
after each offset commit); the group join before is not counted. The runner's inbox is emptied
between repetitions. Reported: median events/s per phase, the ratio runner/raw per repetition and
its median (target >= 0.25), events per CPU-second of each phase's process, each phase's peak RSS
(``ru_maxrss`` of its subprocess) and the load average (the machine may be shared). Not a timed
test: numbers go to ``bench/results/consumer_runner.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio
from aiokafka import AIOKafkaProducer
from sqlalchemy import create_engine

from bench.consumer_runner_phases import FETCH_MAX_WAIT_MS, MeterRead, run_phase
from bench.recording import command_line, write_results
from bench.stack import bootstrap_servers, fresh_database
from engine.codec import encode
from engine.settings import ConsumerSettings, KafkaSettings
from outbox.inbox_table import inbox
from outbox.kafka import KafkaTopicAdmin
from outbox.table import metadata
from outbox.topics import TopicSpec

if TYPE_CHECKING:
    from collections.abc import Sequence

TARGET_RATIO: Final = 0.25


# -- orchestration ----------------------------------------------------------------------------


async def fill_topic(bootstrap: str, topic: str, partitions: int, events: int) -> int:
    """Create ``topic`` and send ``events`` encoded MeterRead records; returns one record's size."""
    admin = KafkaTopicAdmin(KafkaSettings(bootstrap_servers=bootstrap))
    try:
        await admin.create(TopicSpec(topic, partitions, 1))
    finally:
        await admin.aclose()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=20, max_batch_size=1 << 20
    )
    await producer.start()
    size = 0
    try:
        for start in range(0, events, 5_000):
            futures = []
            for n in range(start, min(events, start + 5_000)):
                record = encode(
                    MeterRead(
                        aggregate_id=f"meter-{n % 997}", meter=f"m{n % 997}", kwh=n, source="source"
                    )
                )
                size = record.size
                futures.append(
                    await producer.send(topic, record.value, key=record.key, headers=record.headers)
                )
            for future in futures:
                await future
    finally:
        await producer.stop()
    return size


def spawn(
    phase: str, arguments: argparse.Namespace, bootstrap: str, prefix: str, database: str
) -> dict[str, float]:
    """Run one phase in a subprocess and return its JSON result."""
    command = [
        sys.executable,
        "-m",
        "bench.consumer_runner",
        "--phase",
        phase,
        "--bootstrap",
        bootstrap,
        "--prefix",
        prefix,
        "--database",
        database,
        "--events",
        str(arguments.events),
        "--max-poll-records",
        str(arguments.max_poll_records),
        *(["--gc-freeze"] if arguments.gc_freeze else []),
        *(
            ["--max-batch-records", str(arguments.max_batch_records)]
            if arguments.max_batch_records
            else []
        ),
    ]
    done = subprocess.run(
        command,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path.cwd())},
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def empty_inbox(database: str) -> None:
    """Delete every inbox row (the next runner repetition applies everything again)."""
    engine = create_engine(database)
    with engine.begin() as connection:
        connection.execute(inbox.delete())
    engine.dispose()


def measure(arguments: argparse.Namespace) -> dict[str, Any]:
    """Fill the topic once; run raw and runner phases alternately; summarize."""
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    runs: dict[str, list[dict[str, float]]] = {"raw": [], "runner": []}
    with ExitStack() as stack:
        bootstrap = stack.enter_context(bootstrap_servers())
        database = stack.enter_context(fresh_database(metadata.create_all))
        size = anyio.run(
            fill_topic, bootstrap, f"{prefix}source", arguments.partitions, arguments.events
        )
        for _ in range(arguments.reps):
            runs["raw"].append(spawn("raw", arguments, bootstrap, prefix, database))
            runs["runner"].append(spawn("runner", arguments, bootstrap, prefix, database))
            empty_inbox(database)

    def median(phase: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[phase])

    ratios = [
        runner["events_per_s"] / raw["events_per_s"]
        for raw, runner in zip(runs["raw"], runs["runner"], strict=True)
    ]
    return {
        "events": arguments.events,
        "partitions": arguments.partitions,
        "max_poll_records": arguments.max_poll_records,
        "max_batch_records": arguments.max_batch_records or ConsumerSettings().max_batch_records,
        "gc_freeze": arguments.gc_freeze,
        "record_bytes": size,
        "runs": runs,
        "median_events_per_s": {phase: median(phase, "events_per_s") for phase in runs},
        "median_events_per_cpu_s": {phase: median(phase, "events_per_cpu_s") for phase in runs},
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "cpu_ratio": median("runner", "events_per_cpu_s") / median("raw", "events_per_cpu_s"),
        "peak_rss_mib": {
            phase: max(r["peak_rss_mib"] for r in results) for phase, results in runs.items()
        },
    }


def report(result: dict[str, Any], command: str) -> str:
    """The Markdown summary."""
    median, per_cpu, rss = (
        result["median_events_per_s"],
        result["median_events_per_cpu_s"],
        result["peak_rss_mib"],
    )
    verdict = "meets" if result["ratio"] >= TARGET_RATIO else "MISSES"
    load = ", ".join(f"{value:.2f}" for value in result["load_average"])
    lines = [
        "# Consumer runner vs raw aiokafka getmany",
        "",
        f"Command: `{command}`",
        "",
        f"Recorded {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} ({os.cpu_count()} cores, "
        f"load average at the end {load}), Python {platform.python_version()}, bundled Tansu broker, "
        "PostgreSQL inbox (local server).",
        f"{result['events']} records of {result['record_bytes']} B on {result['partitions']} partitions; "
        f"max_poll_records={result['max_poll_records']}, fetch_max_wait_ms={FETCH_MAX_WAIT_MS}, "
        f"runner max_batch_records={result['max_batch_records']}; "
        f"{len(result['runs']['raw'])} alternating repetitions, each phase in a process of its own"
        + (
            "; both tune the interpreter after startup as `eventseam worker` does"
            " (gc.freeze(), first threshold 50,000, switch interval 1 ms, heap pages kept:"
            " outbox.process_tuning.tune_for_worker)."
            if result["gc_freeze"]
            else "; no gc.freeze() (the worker CLI's; see --gc-freeze)."
        ),
        "",
        "| phase | events/s (median) | all runs | events per CPU-second (median) | peak RSS |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    for phase in ("raw", "runner"):
        runs = ", ".join(f"{r['events_per_s']:,.0f}" for r in result["runs"][phase])
        lines.append(
            f"| {phase} | {median[phase]:,.0f} | {runs} | {per_cpu[phase]:,.0f} | {rss[phase]:.0f} MiB |"
        )
    ratios = ", ".join(f"{ratio:.1%}" for ratio in result["ratios"])
    lines += [
        "",
        f"Ratio runner / raw (median of the per-repetition ratios {ratios}): **{result['ratio']:.1%}** — "
        f"{verdict} the 25 % target. Per CPU-second of this process: {result['cpu_ratio']:.1%} "
        "(the PostgreSQL server's CPU is not counted).",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments; run one phase (subprocess) or the whole benchmark."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--max-poll-records", type=int, default=500)
    parser.add_argument(
        "--max-batch-records",
        type=int,
        default=0,
        help="the runner's ConsumerSettings.max_batch_records (0: the setting's default)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="tune both phases' interpreter as `eventseam worker` does (tune_for_worker)",
    )
    parser.add_argument("--phase", choices=["raw", "runner"], help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.phase:
        run_phase(arguments)
        return
    command = command_line("bench.consumer_runner", argv)
    result = measure(arguments)
    result["command"] = command
    result["recorded_utc"] = f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}"
    result["load_average"] = list(os.getloadavg())
    text_report = report(result, command)
    write_results(arguments.out, "consumer_runner", result, text_report)
    print(text_report)


if __name__ == "__main__":
    main()
