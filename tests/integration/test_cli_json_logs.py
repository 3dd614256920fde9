"""`eventseam worker --json-logs` writes nothing but JSON lines, aiokafka's own records included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from app.bootstrap import APP_PATH
from outbox.bundled_broker import free_port
from tests.kafka_broker import REPO_ROOT

if TYPE_CHECKING:
    from pathlib import Path


def test_worker_json_logs_hold_only_json_lines(tmp_path: Path, sqlite_url: str) -> None:
    """With the broker unreachable, aiokafka's connection errors come out as JSON lines naming
    their logger, among the engine's own, until SIGTERM stops the worker."""
    log = tmp_path / "worker.log"
    environment = {
        **os.environ,
        "EVENTSEAM_DATABASE_URL": sqlite_url,
        "EVENTSEAM_CONTEXTS__SHIPPING": "broker",
        "EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # nothing listens there,
    }
    command = [sys.executable, "-c", "from engine.cli import main; main()"]
    command += ["--app", APP_PATH, "worker"]
    command += ["--context", "shipping", "--json-logs"]
    with log.open("wb") as output:
        worker = subprocess.Popen(
            command, cwd=REPO_ROOT, env=environment, stdout=output, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 60
            while b'"logger": "aiokafka' not in log.read_bytes():
                assert worker.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
        finally:
            worker.kill()
            worker.wait()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert {"consumer.starting", "consumer.producer_unavailable"} <= {r["event"] for r in records}
    library = [r for r in records if str(r.get("logger", "")).startswith("aiokafka")]
    assert library
    assert all(r["level"] == "error" and "timestamp" in r for r in library)
