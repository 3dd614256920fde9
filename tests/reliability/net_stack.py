"""The network scenarios' stack: a broker behind a fault proxy, relay and worker processes, a workload.

    with (
        proxied_broker(tmp_path) as (broker, kafka_proxy),   # broker advertises the proxy
        Stack(postgres_url, kafka_proxy.address, prefix, tmp_path) as stack,
    ):
        with stack.relay(), stack.worker():
            ...   # write with stack.write(...), inject faults with the proxy, then stack.verify()

The application is the consumer-runner test app (tests.broker.runner_conftest): ``depot`` owns
ParcelBooked; the worker runs ``courier.record_parcel``, which writes one ``runner_applied`` row
per event (and publishes CourierAssigned, relayed too). Events carry a per-aggregate sequence
number ``n``. Both processes run the real command line (``eventseam relay`` / ``worker``) with
the product's retry and backoff defaults; only topic layout, polling and group timeouts are set
for the bundled broker. Published rows are kept (``retention_seconds``) so their ``published_at``
tells when the relay published them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.engine import make_url

from outbox.bundled_broker import LOOPBACK, BundledBroker, free_port
from outbox.table import Status, outbox
from tests.broker.runner_conftest import (
    BOOKED,
    ParcelBooked,
    applied_table,
    consumer_settings,
    create_tables,
)
from tests.kafka_broker import REPO_ROOT, read_topic, stop_process, wait_for, write_events
from tests.reliability.fault_proxy import FaultProxy
from tests.reliability.verify import DELIVERY_BOUNDS, failed_bounds

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
    from contextlib import AbstractContextManager
    from datetime import datetime
    from pathlib import Path

WORKER = (
    "import sys; from engine.cli.worker import worker; "
    "worker(sys.argv[2:], obj={'app_path': sys.argv[1]})"
)
RELAY = "from engine.cli import main; main()"
APP = "tests.broker.runner_conftest:worker_app"


@contextmanager
def running(
    command: list[str], env: dict[str, str], workdir: Path, name: str
) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` running in ``workdir`` (output in ``<name>.log``); SIGTERMed at exit."""
    with (workdir / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        stop_process(process, timeout=60)


@contextmanager
def proxied_broker(workdir: Path) -> Iterator[tuple[BundledBroker, FaultProxy]]:
    """A bundled broker that advertises a fault proxy in front of it; clients use the proxy."""
    proxy_port = free_port()
    broker = BundledBroker(advertise=f"{LOOPBACK}:{proxy_port}", log_path=workdir / "broker.log")
    broker.start(timeout=60)
    try:
        with FaultProxy(LOOPBACK, broker.port, port=proxy_port) as proxy:
            yield broker, proxy
    finally:
        broker.stop()


@contextmanager
def proxied_database(url: str) -> Iterator[tuple[str, FaultProxy]]:
    """A fault proxy in front of ``url``'s PostgreSQL server, and the URL that goes through it."""
    parsed = make_url(url)
    with FaultProxy(parsed.host or LOOPBACK, parsed.port or 5432) as proxy:
        through = parsed.set(host=proxy.host, port=proxy.port)
        yield through.render_as_string(hide_password=False), proxy


def booked(n: int, aggregates: int) -> ParcelBooked:
    """Event number ``n``: aggregate ``parcel-<n % aggregates>``, its sequence in ``n``."""
    return ParcelBooked(aggregate_id=f"parcel-{n % aggregates}", n=n, source="depot")


@dataclass
class Stack:
    """The relay and worker processes of one scenario, the workload and its checks.

    ``database_url`` is where the test writes and checks (direct); ``relay_database`` and
    ``worker_database`` are what the processes use (a proxy's URL for database faults).
    """

    database_url: str
    bootstrap: str
    prefix: str
    workdir: Path
    relay_database: str = ""
    worker_database: str = ""
    aggregates: int = 50
    #: the relay's KafkaSettings.request_timeout_ms (None: the product default)
    request_timeout_ms: int | None = None
    #: more ``EVENTSEAM_*`` variables for the relay
    relay_extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.relay_database = self.relay_database or self.database_url
        self.worker_database = self.worker_database or self.database_url
        self.engine: Engine = create_engine(self.database_url)
        create_tables(self.engine)
        self.written: dict[str, int] = {}  # event id -> n
        self._next = 0

    # -- processes --------------------------------------------------------------------------

    def relay_environment(self) -> dict[str, str]:
        """``eventseam relay`` settings: product backoffs, test topics and polling."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSEAM_")}
        env |= {
            "EVENTSEAM_DATABASE_URL": self.relay_database,
            "EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS": self.bootstrap,
            "EVENTSEAM_KAFKA__ENABLE_IDEMPOTENCE": "off",
            "EVENTSEAM_RELAY__TOPIC_PREFIX": self.prefix,
            "EVENTSEAM_RELAY__POLL_INTERVAL": "0.05",
            "EVENTSEAM_RELAY__RETENTION_SECONDS": "86400",
            "EVENTSEAM_CONTEXTS__DEPOT": "broker",
            "EVENTSEAM_CONTEXTS__COURIER": "broker",
            "EVENTSEAM_TOPICS__DEPOT__PARTITIONS": "3",
            "EVENTSEAM_TOPICS__COURIER__PARTITIONS": "1",
            "PYTHONPATH": str(REPO_ROOT),
        }
        if self.request_timeout_ms is not None:
            env["EVENTSEAM_KAFKA__REQUEST_TIMEOUT_MS"] = str(self.request_timeout_ms)
        return env | self.relay_extra

    def worker_environment(self) -> dict[str, str]:
        """``eventseam worker --context courier`` settings: the test app, product retries."""
        consumer = consumer_settings(
            self.prefix, max_attempts=5, backoff_initial=0.2, backoff_max=10.0
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSEAM_")}
        env |= {
            f"EVENTSEAM_CONSUMER__{name.upper()}": str(value)
            for name, value in consumer.model_dump().items()
        }
        env |= {
            "RUNNER_TEST_DATABASE": self.worker_database,
            "RUNNER_TEST_BOOTSTRAP": self.bootstrap,
            "RUNNER_TEST_PREFIX": self.prefix,
            "PYTHONPATH": str(REPO_ROOT),
        }
        return env

    @contextmanager
    def relay(self) -> Iterator[subprocess.Popen[bytes]]:
        """``eventseam relay`` running; SIGTERMed (exit code checked by the caller) at exit."""
        command = [sys.executable, "-c", RELAY, "relay", "--json-logs"]
        with self._process(command, self.relay_environment(), "relay") as process:
            yield process

    @contextmanager
    def worker(self) -> Iterator[subprocess.Popen[bytes]]:
        """``eventseam worker --context courier`` running; SIGTERMed at exit."""
        command = [sys.executable, "-c", WORKER, APP, "--context", "courier", "--json-logs"]
        with self._process(command, self.worker_environment(), "worker") as process:
            yield process

    def _process(
        self, command: list[str], env: dict[str, str], name: str
    ) -> AbstractContextManager[subprocess.Popen[bytes]]:
        return running(command, env, self.workdir, name)

    def log(self, name: str) -> str:
        """The output of process ``name`` so far."""
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    # -- workload ---------------------------------------------------------------------------

    def write(self, count: int) -> list[int]:
        """Commit ``count`` more events (one transaction); their outbox ``seq`` values."""
        events = [booked(self._next + i, self.aggregates) for i in range(count)]
        self._next += count
        write_events(self.engine, events)
        self.written.update({str(event.event_id): event.n for event in events})
        ids = [str(event.event_id) for event in events]
        with self.engine.connect() as connection:
            rows = connection.execute(select(outbox.c.seq).where(outbox.c.id.in_(ids)))
            return [int(seq) for (seq,) in rows]

    # -- reading back -----------------------------------------------------------------------

    def unpublished(self) -> int:
        """Outbox rows of ParcelBooked still pending (parked ones count too)."""
        with self.engine.connect() as connection:
            query = select(func.count()).where(
                outbox.c.type == BOOKED, outbox.c.status != Status.PUBLISHED
            )
            return int(connection.execute(query).scalar_one())

    def all_unpublished(self) -> int:
        """Every outbox row not published (follow-ups included)."""
        with self.engine.connect() as connection:
            query = select(func.count()).where(outbox.c.status != Status.PUBLISHED)
            return int(connection.execute(query).scalar_one())

    def published_at(self, seqs: list[int]) -> list[datetime]:
        """``published_at`` of those rows that are published."""
        with self.engine.connect() as connection:
            query = select(outbox.c.published_at).where(
                outbox.c.seq.in_(seqs), outbox.c.status == Status.PUBLISHED
            )
            return [value for (value,) in connection.execute(query) if value is not None]

    def all_published(self, seqs: list[int]) -> bool:
        """True once every row of ``seqs`` is published."""
        return len(self.published_at(seqs)) == len(seqs)

    def applied(self) -> dict[str, list[int]]:
        """runner_applied: event id -> the ids of its application rows (in apply order)."""
        found: dict[str, list[int]] = defaultdict(list)
        with self.engine.connect() as connection:
            query = select(applied_table.c.event_id, applied_table.c.id).order_by(
                applied_table.c.id
            )
            for event_id, row_id in connection.execute(query):
                found[event_id].append(row_id)
        return found

    async def verify(self, scope: set[str] | None = None) -> dict[str, int]:
        """Item 11's end-of-run figures, named as in tests/reliability/verify.py.

        On the ``depot`` topic (read back with an independent consumer): lost, duplicates,
        order_violations; in the worker's applied log: applied_twice, consumer_lost,
        consumer_order_violations, published_not_applied, applied_not_published; in the
        outbox: unpublished (every row, follow-ups included). ``scope``: the event ids the topic
        must hold (all by default; a restarted memory broker lost the earlier ones).
        """
        expected = set(self.written) if scope is None else scope
        records = await read_topic(
            self.bootstrap, f"{self.prefix}depot", expected=len(expected), within=90
        )
        on_topic: list[int] = []
        seen: set[str] = set()
        duplicates = 0
        for record in records:  # partition offset order
            event_id = (record.header("ce_id") or b"").decode()
            if event_id in seen:
                duplicates += 1
            else:
                seen.add(event_id)
                on_topic.append(self.written.get(event_id, -1))
        applied = self.applied()
        in_apply_order = [
            self.written[event_id]
            for _, event_id in sorted((rows[0], event_id) for event_id, rows in applied.items())
            if event_id in self.written
        ]
        written = self.written.keys()
        return {
            "committed": len(self.written),
            "records": len(records),
            "lost": len(expected - seen),
            "duplicates": duplicates,
            "order_violations": self._order_violations(on_topic, "topic"),
            "applied": len(written & applied.keys()),
            "applied_twice": sum(1 for rows in applied.values() if len(rows) > 1),
            "consumer_lost": len(written - applied.keys()),
            "consumer_order_violations": self._order_violations(in_apply_order, "consumer"),
            "published_not_applied": len(seen - applied.keys()),
            "applied_not_published": len((applied.keys() & expected) - seen),
            "unpublished": self.all_unpublished(),
        }

    def _order_violations(self, numbers: list[int], where: str) -> int:
        """Events whose number is below an earlier one of their aggregate (listed in a file)."""
        last: dict[int, int] = {}
        breaks: list[str] = []
        for position, n in enumerate(numbers):
            aggregate = n % self.aggregates
            if n >= 0 and last.get(aggregate, -1) > n:
                breaks.append(f"#{position}: n={n} after n={last[aggregate]}")
            last[aggregate] = max(last.get(aggregate, -1), n)
        if breaks:
            (self.workdir / f"order_violations_{where}.txt").write_text("\n".join(breaks) + "\n")
        return len(breaks)

    async def through_faults(
        self, faults: Sequence[tuple[str, Callable[[], Awaitable[Mapping[str, float]]]]]
    ) -> dict[str, int | float | str]:
        """Run the relay and worker through ``faults``; their figures, the end checks', exit codes.

        Warm-up first (50 events applied). Each fault's figures are named ``<label>_<name>``,
        plus ``<label>_processes_alive``; then ``settle``, both processes stopped, ``verify``.
        """
        figures: dict[str, int | float | str] = {}
        with self.relay() as relay, self.worker() as worker:
            self.write(50)
            await wait_for(lambda: len(self.applied()) == 50, message=f"warm-up; {self.workdir}")
            for label, inject in faults:
                for name, value in (await inject()).items():
                    figures[f"{label}_{name}"] = value
                alive = relay.poll() is None and worker.poll() is None
                figures[f"{label}_processes_alive"] = "yes" if alive else "no"
            await self.settle()
        figures |= await self.verify()
        return figures | {"relay_exit": relay.returncode, "worker_exit": worker.returncode}

    async def settle(self) -> None:
        """Write one more second of events, then wait until every event written is applied and every row published."""
        await write_for(self, 1.0)

        def settled() -> bool:
            return len(self.applied()) >= len(self.written) and not self.all_unpublished()

        def progress() -> str:
            return (
                f"applied {len(self.written.keys() & self.applied().keys())} of"
                f" {len(self.written)} events, {self.unpublished()} ParcelBooked and"
                f" {self.all_unpublished()} rows in all unpublished; logs in {self.workdir}"
            )

        await wait_for(settled, timeout=120, message=progress, in_thread=True)

    def close(self) -> None:
        """Release the test's database connections."""
        self.engine.dispose()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


#: Events per tick and seconds per tick of write_for: at most 25 events a second.
PER_TICK, TICK = 5, 0.2


async def write_for(stack: Stack, seconds: float, per_tick: int = PER_TICK) -> list[int]:
    """Commit ``per_tick`` events every TICK seconds for ``seconds``; their outbox seqs."""
    seqs: list[int] = []
    deadline = anyio.current_time() + seconds
    while anyio.current_time() < deadline:
        seqs += stack.write(per_tick)
        await anyio.sleep(TICK)
    return seqs


def wall_clock() -> float:
    """Seconds since the epoch (published_at is stamped by the relay with the same clock)."""
    return time.time()


#: What every network scenario asserts (verify.DELIVERY_BOUNDS, item 11) plus clean exits.
BOUNDS = {**DELIVERY_BOUNDS, "relay_exit": "== 0", "worker_exit": "== 0"}


def broken(figures: Mapping[str, object]) -> list[str]:
    """The BOUNDS ``figures`` break, and processes found dead after a fault ("..._alive")."""
    dead = [f"{name} = {value}" for name, value in figures.items() if name.endswith("alive")]
    return failed_bounds(figures, BOUNDS) + [line for line in dead if not line.endswith("yes")]
