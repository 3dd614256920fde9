"""What the transactional outbox adds to a one-row business transaction (SQLite file, PostgreSQL).

    .venv/bin/python -m bench.outbox_write [--reps 9] [--txns 400] [--out bench/results]

Per backend and entry point (Core ``Connection`` via ``engine.begin()``; ORM ``Session`` with
``session.begin()`` and ``session.add``), variants of the same business transaction (INSERT one
order row, COMMIT):

    no outbox               the business transaction alone (the baseline), on an engine that
                            eventseam never touched (no event listeners: see Backend)
    +0 events               plus ``outbox.writer.write(target, [], mode)`` (the check only), on
                            an engine eventseam published through (its listeners' cost shows here)
    +1 event                plus stamping, encoding and writing 1 event (OrderPlaced)
    +10 events              plus 10 events (OrderPlaced + 9 OrderLineAdded), one aggregate
    +1 / +10 (immediate)    the same with ``WriteStrategy.IMMEDIATE`` (the INSERT at once)

The plain variants write as ``EventSeam.publish`` does: ``WriteStrategy.AT_COMMIT`` on an engine
that opts in (``execution_options={"eventseam_outbox_write": "at_commit"}``; on psycopg 3 the
INSERT travels with the COMMIT; on SQLite it is the immediate INSERT, so the two SQLite variants
differ only by noise). The baseline runs on an engine of its own without the option. The timed
part is the whole transaction including the publish cost (``model_copy`` to stamp the source,
``codec.encode``, ``writer.write`` = row building and the INSERT, now or with the COMMIT);
building the event objects (the host's own code) is done before the clock starts. Variants are
interleaved transaction by transaction (rounds of one transaction per variant, each round in a
fresh random order so that no variant systematically follows another), each variant on an engine
(one connection) of its own (see Backend), and every transaction is timed on its own, so load
bursts from other processes on the shared machine hit all variants alike. Per repetition: each
variant's median and mean transaction time; reported: medians over repetitions of the ratios to
the baseline of the same repetition. Peak RSS is the process's ``ru_maxrss``. Not a timed test:
numbers go to ``bench/results/outbox_write.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import psycopg
import sqlalchemy
from sqlalchemy import (
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    insert,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bench.recording import command_line, write_results
from bench.stack import POSTGRES_ADMIN_URL
from engine.codec import encode
from engine.events import DomainEvent
from engine.modes import Mode
from engine.unit_of_work import hold_until_commit
from outbox import migrate
from outbox.deferred import WRITE_OPTION
from outbox.writer import WriteStrategy, build_rows, compiled_insert, write

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

IMMEDIATE_1: Final = "+1 event (immediate)"
IMMEDIATE_10: Final = "+10 events (immediate)"
VARIANTS: Final = ("no outbox", "+0 events", "+1 event", "+10 events", IMMEDIATE_1, IMMEDIATE_10)
EVENTS_PER_VARIANT: Final = {
    "no outbox": None,
    "+0 events": 0,
    "+1 event": 1,
    "+10 events": 10,
    IMMEDIATE_1: 1,
    IMMEDIATE_10: 10,
}
#: How each variant writes (no outbox: not at all).
STRATEGIES: Final = {
    "no outbox": None,
    "+0 events": WriteStrategy.AT_COMMIT,
    "+1 event": WriteStrategy.AT_COMMIT,
    "+10 events": WriteStrategy.AT_COMMIT,
    IMMEDIATE_1: WriteStrategy.IMMEDIATE,
    IMMEDIATE_10: WriteStrategy.IMMEDIATE,
}
ENTRIES: Final = ("core", "orm")
#: Targets from the issue (PostgreSQL): the overhead a variant may add to the baseline.
TARGETS: Final = {"+1 event": 0.25, "+10 events": 0.60}


class OrderPlaced(DomainEvent, name="bench.OrderPlaced", version=1):
    """An order was placed (the +1 event)."""

    order_id: str
    customer: str
    total_cents: int
    currency: str


class OrderLineAdded(DomainEvent, name="bench.OrderLineAdded", version=1):
    """A line was added to an order (the other 9 of +10)."""

    order_id: str
    sku: str
    quantity: int
    unit_price_cents: int


class Base(DeclarativeBase):
    """The benchmark's own ORM base (the business schema of a host)."""


class Order(Base):
    """The business row (ORM entry point)."""

    __tablename__ = "bench_orders"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    customer: Mapped[str] = mapped_column(String(100))
    total_cents: Mapped[int] = mapped_column(Integer)
    placed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


orders: Table = Order.__table__  # type: ignore[assignment]  # a declarative class's Table
_business: MetaData = Base.metadata
_insert_order = insert(orders)


@dataclass
class Job:
    """One business transaction's input, built before the clock starts."""

    order_id: str
    placed_at: datetime
    events: list[DomainEvent]


def make_job(event_count: int | None) -> Job:
    """The order row and (for outbox variants) its events, all for one aggregate."""
    order_id = str(uuid.uuid4())
    placed_at = datetime.now(UTC)
    events: list[DomainEvent] = []
    if event_count:
        events.append(
            OrderPlaced(
                aggregate_id=order_id,
                order_id=order_id,
                customer="c-1042",
                total_cents=12_990,
                currency="EUR",
            )
        )
        events.extend(
            OrderLineAdded(
                aggregate_id=order_id,
                order_id=order_id,
                sku=f"SKU-{i:05d}",
                quantity=i + 1,
                unit_price_cents=1_299,
            )
            for i in range(event_count - 1)
        )
    return Job(order_id, placed_at, events)


def publish(
    target: Session | sqlalchemy.Connection,
    events: Sequence[DomainEvent],
    strategy: WriteStrategy = WriteStrategy.AT_COMMIT,
) -> None:
    """What EventSeam.publish does for the outbox: stamp the source, encode, write."""
    records = [encode(event.model_copy(update={"source": "orders"})) for event in events]
    write(target, records, Mode.DUAL, strategy=strategy)


def run_core(engine: Engine, job: Job, strategy: WriteStrategy | None) -> None:
    """One Core transaction: INSERT the order (+ publish), COMMIT."""
    with engine.begin() as connection:
        connection.execute(
            _insert_order,
            {
                "id": job.order_id,
                "customer": "c-1042",
                "total_cents": 12_990,
                "placed_at": job.placed_at,
            },
        )
        if strategy is not None:
            publish(connection, job.events, strategy)


def run_orm(engine: Engine, job: Job, strategy: WriteStrategy | None) -> None:
    """One ORM transaction: session.add(order) (+ publish), COMMIT (flushes the order)."""
    with Session(engine) as session, session.begin():
        session.add(
            Order(id=job.order_id, customer="c-1042", total_cents=12_990, placed_at=job.placed_at)
        )
        if strategy is not None:
            publish(session, job.events, strategy)


RUNNERS: Final[dict[str, Callable[[Engine, Job, WriteStrategy | None], None]]] = {
    "core": run_core,
    "orm": run_orm,
}


@dataclass
class Backend:
    """A database under test: the engines eventseam writes through and one it never touches.

    SQLAlchemy makes every transaction of an engine slower once the engine has any event
    listener, and eventseam adds its (engine.unit_of_work) at the first publish; the baseline
    runs on ``plain`` so that this cost is counted in the overhead, not hidden in it.

    The interleaved timing gives every variant an engine of its own (``variants``: one pooled
    connection each, used once per round). A PostgreSQL connection that carries more of the
    transactions runs each of them slower: the same one-row transaction, no outbox anywhere,
    took 20-25 % longer on a connection used five times per round than on one used once
    (2026-11-28, raw psycopg). With one engine shared by the five outbox variants against the
    baseline's own, that cost was counted as the outbox's. Each outbox engine publishes once
    before the timing (``warm_up``), so its listeners are in place, as in an application.
    """

    name: str
    url: str
    engine: Engine
    server: str
    plain: Engine
    #: The engine each variant runs on in the interleaved timing ("no outbox": ``plain``).
    variants: dict[str, Engine]


@contextmanager
def sqlite_backend() -> Iterator[Backend]:
    """A SQLite file (default pysqlite settings: rollback journal, synchronous=FULL) on local disk."""
    with tempfile.TemporaryDirectory(
        prefix="eventseam-bench-", dir=Path(__file__).parent
    ) as directory:
        url = f"sqlite:///{Path(directory) / 'bench.db'}"
        with variant_engines(url, {}) as (engine, plain, variants):
            server = f"SQLite {sqlite3.sqlite_version}"
            yield Backend("SQLite (file)", url, engine, server, plain, variants)


@contextmanager
def postgres_backend() -> Iterator[Backend]:
    """A fresh PostgreSQL database (dropped afterwards) on the server of EVENTSEAM_BENCH_POSTGRES."""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"eventseam_bench_{os.getpid()}"
    with admin.connect() as connection:
        version = str(connection.scalar(text("SHOW server_version")))
        settings = {
            key: str(connection.scalar(text(f"SHOW {key}")))
            for key in ("fsync", "synchronous_commit", "wal_sync_method", "shared_buffers")
        }
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    # The outbox variants' engine opts in to at_commit writes, as an application would
    # (outbox.deferred); the IMMEDIATE variants still insert at once on it.
    try:
        with variant_engines(url, {WRITE_OPTION: "at_commit"}) as (engine, plain, variants):
            shown = ", ".join(f"{k}={v}" for k, v in settings.items())
            server = f"PostgreSQL {version} ({shown})"
            yield Backend("PostgreSQL", url, engine, server, plain, variants)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def variant_engines(
    url: str, options: dict[str, str]
) -> Iterator[tuple[Engine, Engine, dict[str, Engine]]]:
    """(the engine eventseam writes through, the plain one, one engine per outbox variant).

    The outbox engines get ``options`` (execution options); all are disposed at the end.
    """
    with ExitStack() as stack:

        def made(**kwargs: Any) -> Engine:
            engine = create_engine(url, **kwargs)
            stack.callback(engine.dispose)
            return engine

        engine, plain = made(execution_options=options), made()
        variants = {v: made(execution_options=options) for v in VARIANTS if v != "no outbox"}
        yield engine, plain, {"no outbox": plain, **variants}


def prepare_schema(backend: Backend) -> None:
    """The business table plus the eventseam schema through its own migrations; then each
    outbox engine publishes once (its eventseam listeners in place, as in an application)."""
    _business.create_all(backend.engine)
    migrate.upgrade(backend.engine)
    for variant, engine in backend.variants.items():
        if variant != "no outbox":
            warm_up(engine)


def warm_up(engine: Engine) -> None:
    """One published event through ``engine``, as ``EventSeam.publish`` makes it: held for the
    bus (engine.unit_of_work) and written to the outbox (at commit where supported)."""
    job = make_job(1)
    with engine.begin() as connection:
        hold_until_commit(connection, job.events, lambda events: None)
        publish(connection, job.events, WriteStrategy.AT_COMMIT)


def time_round_robin(backend: Backend, entry: str, txns: int) -> dict[str, dict[str, float]]:
    """Run ``txns`` rounds of every variant, interleaved transaction by transaction (shuffled).

    Each transaction is timed on its own, so a burst of load from another process hits all
    variants alike; returns each variant's median and mean seconds per transaction.
    """
    jobs = {v: [make_job(EVENTS_PER_VARIANT[v]) for _ in range(txns)] for v in VARIANTS}
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    run, clock = RUNNERS[entry], time.perf_counter
    engines = backend.variants
    order, shuffle = list(VARIANTS), random.Random(f"{backend.name}/{entry}").shuffle
    gc.collect()
    for i in range(txns):
        shuffle(order)  # no variant keeps following another (a +10 transaction leaves work behind)
        for variant in order:
            start = clock()
            run(engines[variant], jobs[variant][i], STRATEGIES[variant])
            times[variant].append(clock() - start)
    return {
        v: {"median": statistics.median(t), "mean": statistics.fmean(t)} for v, t in times.items()
    }


Samples = dict[str, dict[str, list[dict[str, dict[str, float]]]]]


def measure(backends: list[Backend], reps: int, txns: int) -> Samples:
    """``reps`` repetitions over every backend x entry; per repetition, per-variant stats."""
    samples: Samples = {b.name: {e: [] for e in ENTRIES} for b in backends}
    for backend in backends:  # warm-up: connections, compiled and prepared statements
        for entry in ENTRIES:
            time_round_robin(backend, entry, max(20, txns // 10))
    for rep in range(reps):
        for backend in backends:
            for entry in ENTRIES:
                samples[backend.name][entry].append(time_round_robin(backend, entry, txns))
        print(
            f"repetition {rep + 1}/{reps} done (load average {os.getloadavg()[0]:.2f})",
            file=sys.stderr,
        )
    return samples


def summarize(samples: Samples) -> list[dict[str, Any]]:
    """One row per backend x entry x variant: medians over repetitions of paired ratios."""
    rows = []
    for backend, by_entry in samples.items():
        for entry, reps in by_entry.items():
            for variant in VARIANTS:
                by_median = [r[variant]["median"] / r["no outbox"]["median"] - 1 for r in reps]
                by_mean = [r[variant]["mean"] / r["no outbox"]["mean"] - 1 for r in reps]
                overhead = statistics.median(by_median)
                target = TARGETS.get(variant) if backend == "PostgreSQL" else None
                rows.append(
                    {
                        "backend": backend,
                        "entry": entry,
                        "variant": variant,
                        "median_us_per_txn": statistics.median(r[variant]["median"] for r in reps)
                        * 1e6,
                        "txn_per_s": 1 / statistics.median(r[variant]["mean"] for r in reps),
                        "overhead": overhead,
                        "overhead_min": min(by_median),
                        "overhead_max": max(by_median),
                        "overhead_mean_based": statistics.median(by_mean),
                        "target": target,
                        "meets_target": None if target is None else overhead <= target,
                    }
                )
    return rows


PHASES: Final = ("BEGIN + business INSERT", "stamp + encode", "write()", "COMMIT")


def breakdown(backend: Backend, txns: int) -> dict[str, dict[str, float]]:
    """Median microseconds of each phase of a Core transaction, per event count and strategy.

    Keys are ``"<events> <strategy>"`` (0, 1 and 10 events; at_commit and immediate). For
    ``immediate`` ``write()`` is row building plus the INSERT; for ``at_commit`` on psycopg it is
    row building only and the INSERT is in ``COMMIT``. ``build_rows`` (the row building alone,
    timed apart on the same records) shows how ``write()`` splits.
    """
    result: dict[str, dict[str, float]] = {}
    clock = time.perf_counter
    cases = [(0, WriteStrategy.AT_COMMIT)] + [
        (count, strategy) for count in (1, 10) for strategy in WriteStrategy
    ]
    for count, strategy in cases:
        phases: dict[str, list[float]] = {name: [] for name in (*PHASES, "of which build_rows")}
        for job in [make_job(count) for _ in range(txns)]:
            values = {"id": job.order_id, "customer": "c-1042", "total_cents": 12_990}
            t0 = clock()
            with backend.engine.connect() as connection:
                transaction = connection.begin()
                connection.execute(_insert_order, {**values, "placed_at": job.placed_at})
                t1 = clock()
                records = [encode(e.model_copy(update={"source": "orders"})) for e in job.events]
                t2 = clock()
                write(connection, records, Mode.DUAL, strategy=strategy)
                t3 = clock()
                transaction.commit()
                t4 = clock()
            t5 = clock()
            build_rows(records, Mode.DUAL)
            for name, took in zip(
                phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, clock() - t5), strict=True
            ):
                phases[name].append(took)
        key = f"{count} {strategy.value}"
        result[key] = {name: statistics.median(v) * 1e6 for name, v in phases.items()}
    return result


PROBES: Final = (
    "round trip (SELECT 1)",
    "outbox INSERT, 1 row",
    "outbox INSERT, 10 rows",
    "empty pipeline (enter + Sync)",
)


def probe(backend: Backend, txns: int) -> dict[str, float]:
    """Median microseconds of raw psycopg operations inside a transaction (no SQLAlchemy).

    What the outbox INSERT costs on the server and on the wire, apart from Python: a bare round
    trip, the writer's 1-row and 10-row INSERTs (parameters built beforehand), and psycopg's
    pipeline overhead. Interleaved like the variants; each transaction is rolled back.
    """
    rows = {n: _rows_of(make_job(n)) for n in (1, 10)}
    statements = {n: compiled_insert(backend.engine.dialect, n) for n in (1, 10)}
    times: dict[str, list[float]] = {name: [] for name in PROBES}
    clock = time.perf_counter
    with backend.engine.connect() as connection:
        driver: Any = connection.connection.driver_connection
        driver.rollback()
        for i in range(txns):
            for name in random.Random(i).sample(PROBES, len(PROBES)):
                driver.execute("SELECT 1")  # the transaction is open before the clock starts
                count = 10 if name.endswith("10 rows") else 1
                parameters = statements[count].parameters([_fresh(r) for r in rows[count]])
                start = clock()
                if name.startswith("round trip"):
                    driver.execute("SELECT 1")
                elif name.startswith("outbox INSERT"):
                    driver.execute(statements[count].sql, parameters)
                else:
                    with driver.pipeline():
                        pass
                times[name].append(clock() - start)
                driver.rollback()
    return {name: statistics.median(v) * 1e6 for name, v in times.items()}


def round_trips(backend: Backend) -> dict[str, int]:
    """Client waits (ReadyForQuery messages in libpq's trace) of one Core transaction per variant.

    Load-independent: each is one network round trip, whatever the latency between the
    application and PostgreSQL (here a loopback, elsewhere often 0.1-1 ms).
    """
    result: dict[str, int] = {}
    for variant in ("no outbox", "+1 event", "+10 events", IMMEDIATE_1, IMMEDIATE_10):
        job = make_job(EVENTS_PER_VARIANT[variant])
        engine = backend.plain if variant == "no outbox" else backend.engine
        strategy = STRATEGIES[variant]
        with tempfile.TemporaryFile("w+") as trace, engine.connect() as connection:
            pgconn = connection.connection.driver_connection.pgconn  # type: ignore[union-attr]
            pgconn.trace(trace.fileno())
            pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
            with connection.begin():
                connection.execute(
                    _insert_order,
                    {
                        "id": job.order_id,
                        "customer": "c",
                        "total_cents": 1,
                        "placed_at": job.placed_at,
                    },
                )
                if strategy is not None:
                    publish(connection, job.events, strategy)
            pgconn.untrace()
            trace.seek(0)
            result[variant] = sum("ReadyForQuery" in line for line in trace)
    return result


def _rows_of(job: Job) -> list[tuple[Any, ...]]:
    records = [encode(e.model_copy(update={"source": "orders"})) for e in job.events]
    return [tuple(row.values()) for row in build_rows(records, Mode.DUAL)]


def _fresh(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """``row`` with a new event id (the column is unique)."""
    return (uuid.uuid4(), *row[1:])


def environment(backends: list[Backend]) -> dict[str, Any]:
    """What the numbers depend on."""
    return {
        "python": platform.python_version(),
        "sqlalchemy": sqlalchemy.__version__,
        "psycopg": f"{psycopg.__version__} ({psycopg.pq.__impl__})",
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "servers": {b.name: b.server for b in backends},
    }


def render_markdown(result: dict[str, Any]) -> str:
    """The results page: command, date, environment, table, verdict, method."""
    env = result["environment"]
    lines = [
        "# Outbox write overhead on a one-row business transaction",
        "",
        f"- Command: `{result['command']}`",
        f"- Date: {result['date']}",
        f"- Python {env['python']}, SQLAlchemy {env['sqlalchemy']}, psycopg {env['psycopg']}, "
        f"{env['cpus']} CPUs ({env['machine']}), shared with other engineers' runs",
        *(f"- {name}: {server}" for name, server in env["servers"].items()),
        f"- {result['reps']} interleaved repetitions x {result['txns']} transactions per block; "
        f"load average {result['load_before']:.2f} before, {result['load_after']:.2f} after",
        f"- Peak RSS of the benchmark process: {result['peak_rss_mib']:.1f} MiB",
        "",
        "| backend | entry | variant | txn/s | median us/txn | overhead | range over reps | overhead of the mean | target (PostgreSQL) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in result["rows"]:
        if row["variant"] == "no outbox":
            overhead, spread, of_mean = "baseline", "", ""
        else:
            overhead = f"{row['overhead'] * 100:+.1f} %"
            spread = f"{row['overhead_min'] * 100:+.0f} .. {row['overhead_max'] * 100:+.0f} %"
            of_mean = f"{row['overhead_mean_based'] * 100:+.1f} %"
        target = ""
        if row["target"] is not None:
            target = (
                f"<= +{row['target'] * 100:.0f} %: {'met' if row['meets_target'] else 'NOT met'}"
            )
        lines.append(
            f"| {row['backend']} | {row['entry']} | {row['variant']} | {row['txn_per_s']:,.0f} | "
            f"{row['median_us_per_txn']:,.0f} | {overhead} | {spread} | {of_mean} | {target} |"
        )
    lines += [
        "",
        "Variants run interleaved transaction by transaction (each round shuffled), each",
        "transaction timed on its own. *overhead* = median over repetitions of (median transaction",
        "time of the variant / that of the baseline in the same repetition) - 1; *range* = smallest",
        "and largest of those per-repetition values; *overhead of the mean* = the same with mean",
        "times (what throughput sees, stalls included); *txn/s* = 1 / mean transaction time",
        "(median over repetitions). The target verdict uses *overhead*. The baseline runs on an",
        "engine eventseam never touched; every other variant on the engine it writes through, so",
        "*+0 events* shows what eventseam's engine listeners (engine.unit_of_work) cost every",
        "transaction of that engine, publishing or not.",
        "",
        *render_before_after(result),
        "## Where the time goes (Core entry point, median us per phase)",
        "",
        "| backend | events | strategy | " + " | ".join(PHASES) + " | of which build_rows |",
        "| --- | ---: | --- | " + " | ".join("---:" for _ in PHASES) + " | ---: |",
        *(
            f"| {backend} | {' | '.join(case.split(' '))} | "
            + " | ".join(f"{phases[name]:,.0f}" for name in (*PHASES, "of which build_rows"))
            + " |"
            for backend, by_case in result["breakdown_us"].items()
            for case, phases in by_case.items()
        ),
        "",
        "With ``at_commit`` on PostgreSQL, ``write()`` only builds the rows and ``COMMIT`` carries",
        "the INSERT (one pipelined flight: INSERT + COMMIT + Sync).",
        "",
        "## Round trips per Core transaction (PostgreSQL, counted in libpq's trace)",
        "",
        "| " + " | ".join(result.get("round_trips") or {}) + " |",
        "| " + " | ".join("---:" for _ in result.get("round_trips") or {}) + " |",
        "| " + " | ".join(str(n) for n in (result.get("round_trips") or {}).values()) + " |",
        "",
        "psycopg sends BEGIN as a round trip of its own; each extra trip costs the network",
        "latency between the application and PostgreSQL (a loopback here).",
        "",
        "## Raw psycopg costs inside a transaction (PostgreSQL, median us, no SQLAlchemy)",
        "",
        "| " + " | ".join(PROBES) + " |",
        "| " + " | ".join("---:" for _ in PROBES) + " |",
        "| " + " | ".join(f"{result['probe_us'][name]:,.0f}" for name in PROBES) + " |"
        if result.get("probe_us")
        else "| " + " | ".join("n/a" for _ in PROBES) + " |",
        "",
        "Method: see the docstring of `bench/outbox_write.py`. Events of one transaction share the",
        "order's aggregate id; building the event objects is outside the timed part; stamping,",
        "encoding, row building and the INSERT are inside. Raw samples: `outbox_write.json`.",
        "",
    ]
    return "\n".join(lines)


def _before_summary(path: Path | None) -> dict[str, Any] | None:
    """Command, date, load and overhead rows of an earlier run's JSON (``--before``)."""
    if path is None:
        return None
    earlier = json.loads(path.read_text())
    keys = ("command", "date", "reps", "txns", "load_before", "load_after", "rows")
    return {key: earlier.get(key) for key in keys} | {"file": str(path)}


def render_before_after(result: dict[str, Any]) -> list[str]:
    """Markdown lines comparing this run's overheads with ``result["before"]`` (if given)."""
    before = result.get("before")
    if not before:
        return []
    earlier = {(r["backend"], r["entry"], r["variant"]): r for r in before["rows"]}
    lines = [
        "## Before / after",
        "",
        f"- Before: `{before['command']}` ({before['date']}, {before['reps']} x "
        f"{before['txns']}, load {before['load_before']:.2f} / {before['load_after']:.2f}), "
        f"from `{before['file']}`",
        f"- After: this page's run ({result['date']})",
        "",
        "| backend | entry | variant | before: overhead (range) | after: overhead (range) | target |",
        "| --- | --- | --- | ---: | ---: | --- |",
    ]
    for row in result["rows"]:
        old = earlier.get((row["backend"], row["entry"], row["variant"]))
        if old is None or row["variant"] == "no outbox":
            continue
        target = ""
        if row["target"] is not None:
            target = (
                f"<= +{row['target'] * 100:.0f} %: {'met' if row['meets_target'] else 'NOT met'}"
            )
        lines.append(
            f"| {row['backend']} | {row['entry']} | {row['variant']} | {_overhead(old)} | "
            f"{_overhead(row)} | {target} |"
        )
    return [*lines, ""]


def _overhead(row: dict[str, Any]) -> str:
    return (
        f"{row['overhead'] * 100:+.1f} % ({row['overhead_min'] * 100:+.0f} .. "
        f"{row['overhead_max'] * 100:+.0f} %)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write bench/results/outbox_write.{md,json}."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=9, help="interleaved repetitions (default 9)")
    parser.add_argument(
        "--txns", type=int, default=400, help="transactions per timed block (default 400)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results", help="results directory"
    )
    parser.add_argument(
        "--no-postgres", action="store_true", help="SQLite only (PostgreSQL is down)"
    )
    parser.add_argument(
        "--before",
        type=Path,
        help="outbox_write.json of an earlier run (e.g. the previous code) to compare with",
    )
    args = parser.parse_args(argv)

    with ExitStack() as stack:
        backends = [stack.enter_context(sqlite_backend())]
        if not args.no_postgres:
            try:
                backends.append(stack.enter_context(postgres_backend()))
            except OperationalError as exc:
                print(
                    f"PostgreSQL is not available ({exc.orig}); use --no-postgres", file=sys.stderr
                )
                return 2
        for backend in backends:
            prepare_schema(backend)
        load_before = os.getloadavg()[0]
        samples = measure(backends, args.reps, args.txns)
        phases = {b.name: breakdown(b, args.txns) for b in backends}
        probes = {b.name: probe(b, args.txns) for b in backends if b.name == "PostgreSQL"}
        trips = {b.name: round_trips(b) for b in backends if b.name == "PostgreSQL"}
        load_after = os.getloadavg()[0]
        env = environment(backends)
    command = command_line("bench.outbox_write", argv)
    result = {
        "command": command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": env,
        "reps": args.reps,
        "txns": args.txns,
        "load_before": load_before,
        "load_after": load_after,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rows": summarize(samples),
        "breakdown_us": phases,
        "probe_us": probes.get("PostgreSQL"),
        "round_trips": trips.get("PostgreSQL"),
        "before": _before_summary(args.before),
        "samples_s_per_txn": samples,
    }
    markdown = render_markdown(result)
    write_results(args.out, "outbox_write", result, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
