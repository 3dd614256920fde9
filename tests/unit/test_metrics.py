"""engine.metrics: the record functions, the bus and runner instrumentation, serving, multiprocess mode."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import create_engine

from engine import metrics
from engine.bus import Bus
from engine.contexts import BoundedContext
from engine.errors import SettingsError
from engine.events import DomainEvent
from engine.seam import EventSeam
from engine.settings import BusSettings, EventSeamSettings
from engine.status import OutboxFigures
from engine.types import Subscription
from outbox.table import metadata
from tests.kafka_broker import item, write_events
from tests.unit.test_runner_batches import FAILED, TOPIC, handled, records, running, spoke

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy import Engine

pytestmark = pytest.mark.anyio

REPO_ROOT = Path(__file__).resolve().parents[2]


def sample(name: str, **labels: str) -> float:
    """A sample of the default registry (0 when absent)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


class MeterRead(DomainEvent, name="tests.metrics.MeterRead", version=1):
    """A meter was read (the bus tests' event)."""

    fail: bool = False


meters = BoundedContext("meters", owns=[MeterRead])
readers = BoundedContext("readers")


@readers.handler(MeterRead, name="store_reading_on_meter_read")
async def store_reading_on_meter_read(event: MeterRead) -> None:
    """Fail on the readings marked ``fail``."""
    if event.fail:
        raise ValueError("meter unreadable")


def test_outbox_gauges_follow_each_query_and_fall_back_to_zero() -> None:
    """record_outbox sets backlog, age and parked per context; a context gone from the query reads 0."""
    metrics.record_outbox(
        {
            "m_orders": OutboxFigures(backlog=7, oldest_pending_age_seconds=12.5, parked=2),
            "m_payments": OutboxFigures(backlog=1, oldest_pending_age_seconds=0.5),
        }
    )
    assert sample("eventseam_outbox_backlog_rows", context="m_orders") == 7
    assert sample("eventseam_outbox_oldest_pending_age_seconds", context="m_orders") == 12.5
    assert sample("eventseam_outbox_parked_rows", context="m_orders") == 2
    metrics.record_outbox({"m_payments": OutboxFigures(backlog=3, oldest_pending_age_seconds=1.0)})
    assert REGISTRY.get_sample_value("eventseam_outbox_backlog_rows", {"context": "m_orders"}) == 0
    assert sample("eventseam_outbox_parked_rows", context="m_orders") == 0
    assert sample("eventseam_outbox_backlog_rows", context="m_payments") == 3


def test_relay_outcomes_are_counted_per_context() -> None:
    """record_relay counts each row under its own context and the outcome."""
    before = sample("eventseam_relay_messages_total", context="m_a", outcome="published")
    metrics.record_relay(metrics.PUBLISHED, ["m_a", "m_b", "m_a"])
    metrics.record_relay(metrics.PARKED, ["m_b"])
    assert (
        sample("eventseam_relay_messages_total", context="m_a", outcome="published") == before + 2
    )
    assert sample("eventseam_relay_messages_total", context="m_b", outcome="parked") >= 1


def test_consumer_lag_gauges_drop_partitions_no_longer_assigned() -> None:
    """record_consumer_lag sets one gauge per partition and removes the ones a rebalance took away."""
    metrics.record_consumer_lag({"m.group": {("m.topic", 0): 4, ("m.topic", 1): 0}})
    labels = {"group": "m.group", "topic": "m.topic"}
    assert (
        REGISTRY.get_sample_value("eventseam_consumer_lag_records", labels | {"partition": "0"})
        == 4
    )
    metrics.record_consumer_lag({"m.group": {("m.topic", 1): 2}})
    assert (
        REGISTRY.get_sample_value("eventseam_consumer_lag_records", labels | {"partition": "0"})
        is None
    )
    assert (
        REGISTRY.get_sample_value("eventseam_consumer_lag_records", labels | {"partition": "1"})
        == 2
    )


async def test_timed_handler_observes_successes_and_failures() -> None:
    """A timed handler observes one duration per call, also when the handler raises."""

    async def handle(event: DomainEvent) -> None:
        if isinstance(event, MeterRead) and event.fail:
            raise ValueError("meter unreadable")

    timed = metrics.timed_handler(handle, "m.timed", metrics.BUS)
    await timed(MeterRead(aggregate_id="m"))
    with pytest.raises(ValueError, match="unreadable"):
        await timed(MeterRead(aggregate_id="m", fail=True))
    count = sample("eventseam_handler_duration_seconds_count", handler="m.timed", transport="bus")
    assert count == 2


def test_a_batch_observation_counts_like_one_observe_per_value() -> None:
    """handler_batch_observer fills the same buckets, count and sum as observe per value."""
    values = [0.0, 0.0005, 0.001, 0.0011, 0.003, 0.5, 2.5, 7.0, 100.0, 1e9, 0.001]
    for value in values:
        metrics.handler_observer("m.one_by_one", metrics.KAFKA)(value)
    observe_all = metrics.handler_batch_observer("m.batched", metrics.KAFKA)
    observe_all(values[:4])
    observe_all([])
    observe_all(values[4:])

    def series(handler: str) -> dict[str, float]:
        (family,) = [
            f for f in REGISTRY.collect() if f.name == "eventseam_handler_duration_seconds"
        ]
        return {
            f"{s.name}{s.labels.get('le', '')}": s.value
            for s in family.samples
            if s.labels["handler"] == handler and not s.name.endswith("_created")
        }

    one_by_one, batched = series("m.one_by_one"), series("m.batched")
    assert batched.pop("eventseam_handler_duration_seconds_sum") == pytest.approx(
        one_by_one.pop("eventseam_handler_duration_seconds_sum")
    )
    assert batched == one_by_one
    assert one_by_one["eventseam_handler_duration_seconds_count"] == len(values)
    assert len(set(one_by_one.values())) > 3  # the values spread over several buckets


async def test_seam_times_bus_handlers_and_the_bus_counts_dead_letters() -> None:
    """EventSeam's bus observes every handler attempt and counts each dead letter with its reason."""
    settings = EventSeamSettings(
        bus=BusSettings(max_attempts=2, backoff_initial=0.001, backoff_max=0.002)
    )
    seam = EventSeam(settings, [meters, readers])
    async with anyio.create_task_group() as group:
        await group.start(seam.run)
        await seam.bus.publish(
            MeterRead(aggregate_id="a", source="meters"),
            MeterRead(aggregate_id="b", fail=True, source="meters"),
        )
        await seam.join()
        await seam.aclose()
    labels = {"handler": "readers.store_reading_on_meter_read", "transport": "bus"}
    assert sample("eventseam_handler_duration_seconds_count", **labels) == 3  # 1 + 2 attempts
    assert sample("eventseam_dead_letters_total", **labels, reason="failed") == 1


def test_a_bare_bus_leaves_its_subscriptions_untimed() -> None:
    """A Bus used without EventSeam keeps its handlers as given (no timing on its hot path)."""

    async def handle(event: DomainEvent) -> None:
        return None

    subscription = Subscription("m.bare", (MeterRead,), handle)
    bus = Bus([subscription])
    assert bus.subscriptions == [subscription]
    assert metrics.timed_subscription(subscription).handle is not handle


@pytest.fixture
def runner_db(tmp_path: Path) -> Iterator[Engine]:
    """A SQLite database for the fake-consumer runner (tests.unit.test_runner_batches)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'runner.db'}")
    metadata.create_all(engine)
    handled.clear()
    FAILED.clear()
    yield engine
    engine.dispose()


async def test_runner_times_handlers_counts_dead_letters_and_sets_lag(
    runner_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runner run observes handler calls, counts its dead-letter records and publishes its lag per partition."""
    monkeypatch.setattr(metrics, "LAG_INTERVAL", 0.01)
    labels = {"handler": "wheel.count_spoke", "transport": "kafka"}
    calls = sample("eventseam_handler_duration_seconds_count", **labels)
    dead = sample("eventseam_dead_letters_total", **labels, reason="handler-failed")
    lag = {"group": "eventseam.wheel.count_spoke", "topic": TOPIC, "partition": "0"}
    batch = records(spoke(0), spoke(1, fail_times=99), spoke(2))
    async with running(runner_db, [batch], max_attempts=2) as (_, consumer, _publisher):
        deadline = time.monotonic() + 10
        while not consumer.commits or sample("eventseam_consumer_lag_records", **lag) != 7:
            assert time.monotonic() < deadline, "the runner never committed and sampled its lag"
            await anyio.sleep(0.01)
    assert sample("eventseam_dead_letters_total", **labels, reason="handler-failed") == dead + 1
    assert sample("eventseam_handler_duration_seconds_count", **labels) - calls >= 4


async def test_sample_outbox_queries_the_outbox_periodically(tmp_path: Path) -> None:
    """sample_outbox sets the outbox gauges from the database until it is cancelled."""
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    engine = create_engine(url)
    metadata.create_all(engine)
    write_events(engine, [item(f"s{n}", n, context="m_sampled") for n in range(4)])
    engine.dispose()
    async with anyio.create_task_group() as group:
        group.start_soon(lambda: metrics.sample_outbox(url, interval=0.01))
        deadline = time.monotonic() + 10
        while sample("eventseam_outbox_backlog_rows", context="m_sampled") != 4:
            assert time.monotonic() < deadline, "the sampler never set the backlog"
            await anyio.sleep(0.01)
        group.cancel_scope.cancel()
    assert sample("eventseam_outbox_oldest_pending_age_seconds", context="m_sampled") >= 0


def test_serve_exposes_the_metrics_over_http() -> None:
    """serve() answers /metrics with the eventseam metrics in the text exposition format."""
    metrics.record_relay(metrics.FAILED, ["m_served"])
    server = metrics.serve(0, "127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as page:
            body = page.read().decode()
    finally:
        server.close()
    assert 'eventseam_relay_messages_total{context="m_served",outcome="failed"}' in body


async def test_without_the_extra_metrics_are_no_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without prometheus-client, record functions do nothing, handlers stay unwrapped and serve refuses."""
    monkeypatch.setattr(metrics._state, "installed", False)
    monkeypatch.setattr(metrics._state, "metrics", None)

    async def handle(event: DomainEvent) -> None:
        return None

    assert metrics.timed_handler(handle, "m.none", metrics.BUS) is handle
    metrics.record_relay(metrics.PUBLISHED, ["m_absent"])
    metrics.handler_observer("m.none", metrics.KAFKA)(0.1)
    metrics.handler_batch_observer("m.none", metrics.KAFKA)([0.1, 0.2])
    assert sample("eventseam_relay_messages_total", context="m_absent", outcome="published") == 0
    with pytest.raises(SettingsError, match="prometheus-client"):
        metrics.serve(0)


def multiprocess_env(directory: Path) -> dict[str, str]:
    """The environment of a process recording into ``directory`` (multiprocess mode)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSEAM_")}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


RECORDER = """
import sys
from engine import metrics
from engine.status import OutboxFigures
metrics.record_relay(metrics.PUBLISHED, ["m_multi"] * 3)
metrics.handler_observer("m.multi", metrics.BUS)(0.002)
metrics.record_outbox({"m_multi": OutboxFigures(backlog=int(sys.argv[1]))})
"""


def test_multiprocess_values_are_aggregated_over_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes record into PROMETHEUS_MULTIPROC_DIR; counters add up, gauges keep the most recent live value."""
    env = multiprocess_env(tmp_path)
    pids = []
    for figure in ("5", "9"):  # one after the other: the second one's gauge is the most recent
        process = subprocess.Popen(
            [sys.executable, "-c", RECORDER, figure], env=env, stderr=subprocess.PIPE
        )
        _, errors = process.communicate(timeout=60)
        assert process.returncode == 0, errors.decode()
        pids.append(process.pid)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    collected = metrics.registry()
    published = {"context": "m_multi", "outcome": "published"}
    backlog = {"context": "m_multi"}
    handler = {"handler": "m.multi", "transport": "bus"}
    assert collected.get_sample_value("eventseam_relay_messages_total", published) == 6
    assert collected.get_sample_value("eventseam_handler_duration_seconds_count", handler) == 2
    assert collected.get_sample_value("eventseam_outbox_backlog_rows", backlog) == 9
    metrics.mark_process_dead(pids[1])  # what gunicorn's child_exit hook does
    after = metrics.registry()
    assert after.get_sample_value("eventseam_outbox_backlog_rows", backlog) == 5
    assert after.get_sample_value("eventseam_relay_messages_total", published) == 6


# -- gunicorn ---------------------------------------------------------------------------------

GUNICORN_CONF = """
from engine import metrics

workers = 2
worker_class = "sync"
bind = "127.0.0.1:0"


def child_exit(server, worker):
    metrics.mark_process_dead(worker.pid)
"""


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The gunicorn test's app: /handle observes one bus handler call; /metrics exposes them all."""
    if environ["PATH_INFO"] == "/metrics":
        from prometheus_client import make_wsgi_app

        return make_wsgi_app(metrics.registry())(environ, start_response)  # type: ignore[no-any-return]
    time.sleep(0.05)  # keep this worker busy so the other one takes concurrent requests
    metrics.handler_observer("m.gunicorn", metrics.BUS)(0.001)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


def test_gunicorn_workers_share_metrics_through_the_multiprocess_dir(tmp_path: Path) -> None:
    """Under gunicorn with two workers, /metrics from any worker shows the calls of both."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    conf = tmp_path / "gunicorn_conf.py"
    conf.write_text(GUNICORN_CONF)
    env = multiprocess_env(directory) | {"XDG_RUNTIME_DIR": str(tmp_path)}
    command = [sys.executable, "-m", "gunicorn", "-c", str(conf), f"{__name__}:wsgi_app"]
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=log)
    try:
        base = _listening(log_path, process)
        with ThreadPoolExecutor(8) as pool:
            pids = list(pool.map(lambda _: _get(f"{base}/handle"), range(40)))
        assert len(set(pids)) == 2, f"one worker served everything: {set(pids)}"
        exposed = _get(f"{base}/metrics")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    line = 'eventseam_handler_duration_seconds_count{handler="m.gunicorn",transport="bus"} 40.0'
    assert line in exposed, exposed


def _listening(log_path: Path, process: subprocess.Popen[bytes]) -> str:
    """The base URL once gunicorn logged where it listens (fails after 60 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        for line in text.splitlines():
            if "Listening at: " in line:
                return line.split("Listening at: ", 1)[1].split()[0]
        assert process.poll() is None, text
        time.sleep(0.05)
    pytest.fail(f"gunicorn did not start:\n{log_path.read_text(errors='replace')}")


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as page:
        return str(page.read().decode())
