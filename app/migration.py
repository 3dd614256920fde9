"""The demo's broker side: Kafka, the relay, the routing flags and the detached shipping worker.

    side = await KafkaSide.connect(database)  # EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS, else the bundled broker
    settings = side.settings()                # the monolith's settings (per-run topic and group prefix)
    await side.flip(seam, "orders", Mode.DUAL)  # what `eventseam flags set orders dual` does
    side.start_worker("shipping")             # `eventseam worker --context shipping`, a subprocess
    await side.settled(seam)                  # bus idle, outbox relayed, every consumer group caught up

Every run uses its own topic and consumer-group prefix, so a long-lived Kafka never hands the
demo the events of an earlier run (the demo's database is recreated on every run).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from sqlalchemy import func, select

from app.bootstrap import APP_PATH
from engine.broker_view import BrokerView
from engine.errors import ConsumeError
from engine.settings import EventSeamSettings, KafkaSettings, load_settings
from outbox.bundled_broker import BrokerStartError, BundledBroker
from outbox.inbox_table import inbox
from outbox.table import Status, outbox

if TYPE_CHECKING:
    from engine.modes import Mode
    from engine.seam import EventSeam

#: The example monolith's contexts: the demo sets every mode itself (the flag table).
CONTEXTS = ("orders", "payments", "shipping")
REPO_ROOT = Path(__file__).resolve().parent.parent
#: How long a step may take to settle before the demo reports what it found.
SETTLE_TIMEOUT = 60.0
#: How long EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS may take to answer before the demo gives up on it.
PROBE_SECONDS = 10.0


class BrokerUnavailableError(RuntimeError):
    """Raised by KafkaSide.connect when neither given bootstrap servers nor the bundled broker can be used."""


async def _answers(kafka: KafkaSettings) -> None:
    """Return once the brokers at ``kafka.bootstrap_servers`` answer a metadata request."""
    from outbox.errors import PublishError
    from outbox.kafka import KafkaTopicAdmin  # the kafka extra: imported once it is known there

    admin = KafkaTopicAdmin(kafka)
    try:
        with anyio.fail_after(PROBE_SECONDS):
            await admin.start()
    except (TimeoutError, PublishError) as exc:
        reason = str(exc) or f"no answer within {PROBE_SECONDS:g} s"
        raise BrokerUnavailableError(
            f"Kafka at {kafka.bootstrap_servers} does not answer ({reason}); start it, or unset "
            "EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS for the bundled broker"
        ) from exc
    finally:
        await admin.aclose()


def kafka_installed() -> bool:
    """True when the kafka extra (aiokafka) and the async SQLite driver the relay uses are installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("aiokafka", "aiosqlite"))


@dataclass
class KafkaSide:
    """The broker path of one demo run (see the module docstring)."""

    database: Path
    bootstrap: str
    broker: BundledBroker | None
    prefix: str = field(default_factory=lambda: f"demo{uuid.uuid4().hex[:6]}.")
    worker: subprocess.Popen[bytes] | None = None
    worker_log: Path | None = None

    @classmethod
    async def connect(cls, database: Path) -> KafkaSide:
        """Use EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS once it answers (BrokerUnavailableError after
        PROBE_SECONDS), else start the bundled broker (memory only)."""
        if not kafka_installed():
            raise BrokerUnavailableError(
                "the kafka extra is not installed: pip install -e '.[dev]'"
            )
        kafka = load_settings().kafka
        if kafka.bootstrap_servers:
            await _answers(kafka)
            return cls(database, kafka.bootstrap_servers, None)
        broker = BundledBroker()
        try:
            await anyio.to_thread.run_sync(functools.partial(broker.start, timeout=30))
        except BrokerStartError as exc:
            raise BrokerUnavailableError(str(exc)) from exc
        return cls(database, broker.bootstrap_servers, broker)

    def __post_init__(self) -> None:
        self.database = self.database.resolve()  # absolute: the worker runs in REPO_ROOT

    @property
    def description(self) -> str:
        """Where Kafka is, for the introduction."""
        if self.broker is not None:
            return f"the bundled Kafka-protocol broker on {self.bootstrap} (started by the demo, memory only)"
        return f"Kafka at {self.bootstrap} (EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS)"

    def overrides(self) -> dict[str, Any]:
        """Settings the monolith and the worker share: Kafka, prefixes, fast polling, rows kept."""
        kafka: dict[str, Any] = {"bootstrap_servers": self.bootstrap}
        if self.broker is not None:
            kafka["enable_idempotence"] = "off"  # the bundled broker refuses idempotent producers
        return {
            "database_url": f"sqlite:///{self.database}",
            "contexts": {},  # every mode comes from the flag table, which the demo flips
            "flag_refresh_seconds": 0.1,
            "kafka": kafka,
            "relay": {
                "topic_prefix": self.prefix,
                "poll_interval": 0.05,
                "lease_seconds": 2.0,
                "retention_seconds": 3600,  # keep relayed rows: the demo prints every event
            },
            "consumer": {
                "group_prefix": self.prefix,
                "session_timeout_ms": 3000,
                "heartbeat_interval_ms": 1000,
                "fetch_max_wait_ms": 20,
                "backoff_initial": 0.05,
                "backoff_max": 1.0,
            },
            "topics": {name: {"partitions": 3} for name in CONTEXTS},
        }

    def settings(self, *, detached: tuple[str, ...] = ()) -> EventSeamSettings:
        """The monolith's settings (``detached`` contexts' handlers do not run in it)."""
        return load_settings(**self.overrides(), detached=list(detached))

    # -- flags ------------------------------------------------------------------------------

    async def flip(self, seam: EventSeam, context: str, mode: Mode) -> None:
        """Set ``context``'s mode in the flag table, as ``eventseam flags set`` does; wait until
        the running monolith follows (it re-reads the table every ``flag_refresh_seconds``)."""

        def write() -> None:
            with seam.transaction() as unit:
                seam.flags.set_mode(unit.session, context, mode, by="eventseam demo")

        await anyio.to_thread.run_sync(write)
        deadline = time.monotonic() + 10
        while seam.mode_of(context) is not mode and time.monotonic() < deadline:  # noqa: ASYNC110 - polls the seam's flag snapshot
            await anyio.sleep(0.02)

    # -- the shipping worker -----------------------------------------------------------------

    def worker_command(self, context: str) -> list[str]:
        """``eventseam --app app.bootstrap:bootstrap worker --context CONTEXT --json-logs`` (the
        console script of this Python)."""
        script = shutil.which("eventseam", path=str(Path(sys.executable).parent))
        start = (
            [script] if script else [sys.executable, "-c", "from engine.cli import main; main()"]
        )
        return [*start, "--app", APP_PATH, "worker", "--context", context, "--json-logs"]

    def worker_env(self, modes: dict[str, Mode]) -> dict[str, str]:
        """The worker's environment: the shared settings as EVENTSEAM_* variables, and ``modes``."""
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("EVENTSEAM_")}
        env.update(_variables("EVENTSEAM", self.overrides()))
        for context, mode in modes.items():
            env[f"EVENTSEAM_CONTEXTS__{context.upper()}"] = mode.value
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *([path] if path else [])])
        return env

    def start_worker(self, context: str, modes: dict[str, Mode]) -> int:
        """Start the worker process for ``context``; its JSON log goes next to the database."""
        self.worker_log = self.database.with_name(f"{self.database.stem}-worker-{context}.log")
        with self.worker_log.open("wb") as log:
            self.worker = subprocess.Popen(
                self.worker_command(context),
                cwd=REPO_ROOT,
                env=self.worker_env(modes),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self.worker.pid

    async def worker_ready(self, handlers: int, timeout: float = 30.0) -> bool:  # noqa: ASYNC109 - a polling budget
        """Wait until the worker's ``handlers`` consumers were assigned partitions (its log says)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.worker is None or self.worker.poll() is not None:
                return False
            if self._assigned_groups() >= handlers:
                return True
            await anyio.sleep(0.1)
        return False

    def _assigned_groups(self) -> int:
        if self.worker_log is None or not self.worker_log.exists():
            return 0
        groups = set()
        for line in self.worker_log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == "consumer.partitions_assigned" and entry.get("partitions"):
                groups.add(entry.get("group"))
        return len(groups)

    def stop_worker(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the worker (it finishes the records in hand and commits); its exit status."""
        worker, self.worker = self.worker, None
        if worker is None:
            return None
        if worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(timeout)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        return worker.returncode

    def close(self) -> None:
        """Stop the worker and the bundled broker (if the demo started them)."""
        self.stop_worker()
        if self.broker is not None:
            self.broker.stop()

    # -- settling ----------------------------------------------------------------------------

    async def settled(self, seam: EventSeam, timeout: float = SETTLE_TIMEOUT) -> bool:  # noqa: ASYNC109 - a polling budget
        """Wait until nothing moves: Kafka caught up, the bus idle, no pending row; twice in a row.

        Every consumer group of every handler (in this process or in the worker) counts: a
        record is handled once its group committed past it. False after ``timeout``.
        """
        deadline, clean = time.monotonic() + timeout, 0
        while clean < 2:
            if time.monotonic() > deadline:
                return False
            before = _inbox_rows(seam)
            lag = await self.lag(seam)
            await seam.join()
            quiet = lag == 0 and _pending(seam) == 0 and _inbox_rows(seam) == before
            clean = clean + 1 if quiet else 0
            if not quiet:
                await anyio.sleep(0.1)
        return True

    async def lag(self, seam: EventSeam) -> int:
        """Records not yet handled, summed over every handler's consumer group and topic."""
        topics = [f"{self.prefix}{name}" for name in CONTEXTS]
        total = 0
        try:
            async with BrokerView(seam.settings.kafka, timeout=10) as view:
                ends: dict[tuple[str, int], int] = {}
                for topic in topics:
                    ends.update((await view.read(topic)).highwater)
                for spec in seam.contexts.handlers():
                    group = seam.settings.consumer.group_id(spec.name)
                    committed = await view.committed(group, topics)
                    wanted = {f"{self.prefix}{seam.contexts.owner_of(t)}" for t in spec.event_types}
                    total += sum(
                        max(0, end - committed.get(partition, 0))
                        for partition, end in ends.items()
                        if partition[0] in wanted
                    )
        except ConsumeError:
            return -1  # the broker did not answer: not settled
        return total


def _variables(prefix: str, values: dict[str, Any]) -> dict[str, str]:
    """Nested settings as environment variables: ``{"kafka": {"acks": 1}}`` -> EVENTSEAM_KAFKA__ACKS."""
    flat: dict[str, str] = {}
    for name, value in values.items():
        key = f"{prefix}{'_' if prefix == 'EVENTSEAM' else '__'}{name}".upper()
        if isinstance(value, dict):
            flat.update(_variables(key, value))
        else:
            flat[key] = str(value)
    return flat


def _pending(seam: EventSeam) -> int:
    with seam.transaction() as unit:
        query = select(func.count()).where(outbox.c.status == Status.PENDING)
        return int(unit.session.execute(query).scalar_one())


def _inbox_rows(seam: EventSeam) -> int:
    with seam.transaction() as unit:
        return int(unit.session.execute(select(func.count()).select_from(inbox)).scalar_one())
