"""`eventseam relay` and `eventseam worker` with --health-port: /healthz and /readyz over HTTP."""

from __future__ import annotations

import json
import signal
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
import pytest

from tests.broker.runner_conftest import courier_app, worker_environment, worker_process
from tests.http_probe import probe
from tests.kafka_broker import (
    item,
    outbox_rows,
    relay_env,
    spawn_relay,
    stop_process,
    wait_for,
    write_events,
)

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy import Engine

    from outbox.bundled_broker import BundledBroker

pytestmark = [pytest.mark.anyio, pytest.mark.broker, pytest.mark.postgres]


async def served_port(log: Path) -> int:
    """The port a process logged in its ``health.serving`` JSON line (it asked for any port)."""
    found: list[int] = []

    def logged() -> bool:
        for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
            if '"health.serving"' in line:
                found.append(int(json.loads(line)["port"]))
                return True
        return False

    await wait_for(logged, message=f"health.serving in {log}")
    return found[0]


async def test_relay_probes_follow_its_start_a_broker_outage_and_its_stop(
    postgres_outbox: Engine, private_broker: BundledBroker, topic_prefix: str, tmp_path: Path
) -> None:
    """/readyz is 200 once the relay runs, 503 naming the broker while rows wait on a stopped broker (/healthz stays 200), 200 after the broker returns; SIGTERM exits 0."""
    url = postgres_outbox.url.render_as_string(hide_password=False)
    env = relay_env(url, private_broker.bootstrap_servers, topic_prefix)
    process = spawn_relay(
        env, tmp_path, "relay", "--health-port", "0", "--health-addr", "127.0.0.1"
    )
    try:
        port = await served_port(tmp_path / "relay.log")
        await wait_for(lambda: probe(port, "/readyz")[0] == 200, message="relay ready")
        assert probe(port, "/readyz")[1]["checks"]["relay"] == {"state": "running", "failing": {}}
        private_broker.stop()
        write_events(postgres_outbox, [item(f"o{n % 3}", n) for n in range(10)])
        await wait_for(
            lambda: (
                "broker"
                in probe(port, "/readyz")[1].get("checks", {}).get("relay", {}).get("failing", {})
            ),
            timeout=60,
            message="readiness names the broker",
        )
        status, body = probe(port, "/readyz")
        assert status == 503, body
        assert probe(port, "/healthz")[0] == 200  # an outage is not a reason to restart
        private_broker.start()
        await wait_for(lambda: not outbox_rows(postgres_outbox), timeout=90, message="drained")
        await wait_for(lambda: probe(port, "/readyz")[0] == 200, message="ready again")
    finally:
        code = await anyio.to_thread.run_sync(stop_process, process)
    assert code == 0, (tmp_path / "relay.log").read_text()


async def test_worker_probes_answer_while_it_runs(
    postgres_url: str, kafka_broker: BundledBroker, topic_prefix: str, tmp_path: Path
) -> None:
    """`eventseam worker --health-port`: /readyz 200 once every handler's consumer started, /healthz 200; SIGTERM exits 0."""
    bootstrap = kafka_broker.bootstrap_servers
    environment = worker_environment(postgres_url, bootstrap, topic_prefix)
    log = tmp_path / "worker.log"
    with courier_app(postgres_url, bootstrap, topic_prefix):
        options = ("--json-logs", "--health-port", "0", "--health-addr", "127.0.0.1")
        with worker_process(environment, log, *options) as process:
            port = await served_port(log)
            await wait_for(
                lambda: probe(port, "/readyz")[0] == 200, timeout=60, message="worker ready"
            )
            body = probe(port, "/readyz")[1]
            assert body["checks"]["consumer_runner"] == {"state": "running", "failing": {}}
            assert probe(port, "/healthz")[0] == 200
            process.send_signal(signal.SIGTERM)
            await anyio.to_thread.run_sync(process.wait, 60)
    assert process.returncode == 0, log.read_text()
