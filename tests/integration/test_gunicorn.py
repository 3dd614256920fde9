"""The example web app under gunicorn (2 workers, preload_app): every event is handled, SIGTERM exits."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import create_engine, select

from app.scenarios import EXPECTED, Kind, Outcome, Scenario, plan
from contexts.orders.models import Order
from contexts.payments.models import Payment
from contexts.shipping.models import Label
from outbox.table import outbox

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy import Engine

REPO_ROOT = Path(__file__).resolve().parents[2]
#: A failure deadline, not a speed requirement: gunicorn must be gone well before this.
EXIT_DEADLINE_SECONDS = 15
ORDERS = 40


class Server:
    """A gunicorn master started on a free loopback port; its combined output collected."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def close(self) -> None:
        """Kill gunicorn if it still runs; collect the rest of its output."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        self._reader.join(timeout=30)
        assert self.process.stdout is not None
        self.process.stdout.close()

    @property
    def output(self) -> str:
        """Everything gunicorn and the app printed so far."""
        return "".join(self.lines)

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 60.0) -> list[re.Match[str]]:
        """The first ``count`` matches of ``pattern`` in the output; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = list(re.finditer(pattern, self.output))
            if len(found) >= count:
                return found[:count]
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"gunicorn never printed {pattern!r} x{count}:\n{self.output}")


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Engine]:
    """An engine on the SQLite file the server uses (the server creates the schema)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'web.db'}")
    yield engine
    engine.dispose()


@pytest.fixture
def server(database: Engine, tmp_path: Path) -> Iterator[Server]:
    """gunicorn with app/gunicorn_conf.py (2 workers, preload_app) on port 0 of 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("EVENTSEAM_")}
    env["EVENTSEAM_DATABASE_URL"] = database.url.render_as_string(hide_password=False)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["XDG_RUNTIME_DIR"] = str(tmp_path)  # gunicorn's control socket, away from $HOME
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "app/gunicorn_conf.py",
        "--bind",
        "127.0.0.1:0",
        "--workers",
        "2",
        "app.wsgi:app",
    ]
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = Server(process)
    try:
        yield running
    finally:
        running.close()


def call(base: str, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """An HTTP request with urllib; the status and the JSON answer."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        base + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def run_scenario(base: str, scenario: Scenario) -> Outcome:
    """Place the order (and cancel the ``cancelled`` ones); the outcome it must reach."""
    body = {
        "order_id": scenario.order_id,
        "customer_id": scenario.customer_id,
        "total_cents": scenario.total_cents,
    }
    status, answer = call(base, "POST", "/orders", body)
    assert status == 201, answer
    if scenario.kind is not Kind.CANCELLED:
        return scenario.expected
    status, answer = call(base, "POST", f"/orders/{scenario.order_id}/cancel")
    if status == 409:  # the handlers were faster over HTTP: it shipped before the cancel came
        assert answer["error"] == "OrderNotCancellableError", answer
        return EXPECTED[Kind.SHIPS]
    assert status == 200, answer
    return scenario.expected


def states(engine: Engine) -> dict[str, Outcome]:
    """Every order's outcome as read from the three contexts' tables."""
    with engine.connect() as connection:
        payments = {row.order_id: row.status for row in connection.execute(select(Payment))}
        labels = {row.order_id: row.status for row in connection.execute(select(Label))}
        orders = connection.execute(select(Order.id, Order.status)).all()
        return {
            order_id: Outcome(
                status.value,
                payments[order_id].value if order_id in payments else "-",
                labels[order_id].value if order_id in labels else "-",
            )
            for order_id, status in orders
        }


def events_by_order(engine: Engine) -> dict[str, list[str]]:
    """Event types of the outbox rows, by order id, in write order."""
    found: dict[str, list[str]] = {}
    with engine.connect() as connection:
        rows = connection.execute(select(outbox.c.type, outbox.c.payload).order_by(outbox.c.seq))
        for kind, payload in rows:
            found.setdefault(json.loads(payload)["order_id"], []).append(kind)
    return found


def wait_for_states(engine: Engine, expected: dict[str, Outcome], timeout: float = 60.0) -> None:
    """Poll the database until every order is in its expected state; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = states(engine)
        if all(found.get(order_id) == outcome for order_id, outcome in expected.items()):
            return
        if time.monotonic() > deadline:
            off = {k: (found.get(k), v) for k, v in expected.items() if found.get(k) != v}
            pytest.fail(f"orders not in their expected state (got, expected): {off}")
        time.sleep(0.1)


def test_two_preloaded_workers_handle_every_event_and_stop_on_sigterm(
    server: Server, database: Engine
) -> None:
    """40 orders over HTTP to 2 forked workers reach the outbox and every handler; SIGTERM then ends gunicorn."""
    port = server.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)")[0].group(1)
    server.wait_for(r"eventseam bus started in worker \d+", count=2)
    base = f"http://127.0.0.1:{port}"
    scenarios = plan(ORDERS)
    with ThreadPoolExecutor(4) as pool:
        expected = dict(
            zip(
                (s.order_id for s in scenarios),
                pool.map(lambda s: run_scenario(base, s), scenarios),
                strict=True,
            )
        )
    wait_for_states(database, expected)
    events = events_by_order(database)
    assert sorted(events) == sorted(expected)
    for order_id, outcome in expected.items():
        kinds = events[order_id]
        assert kinds[0] == "orders.OrderPlaced"
        if outcome == EXPECTED[Kind.SHIPS]:
            assert sorted(kinds) == [
                "orders.OrderPlaced",
                "payments.PaymentAuthorized",
                "shipping.LabelCreated",
            ]
        elif outcome.order == "rejected":
            assert sorted(kinds) == ["orders.OrderPlaced", "payments.PaymentDeclined"]
        else:
            assert "orders.OrderCancelled" in kinds
            assert ("payments.PaymentAuthorized" in kinds) == ("payments.PaymentVoided" in kinds)
            assert ("shipping.LabelCreated" in kinds) == ("shipping.LabelVoided" in kinds)

    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=EXIT_DEADLINE_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"gunicorn still running {EXIT_DEADLINE_SECONDS} s after SIGTERM:\n{server.output}"
        )
    server.wait_for(r"eventseam bus stopped in worker \d+", count=2)
    assert server.process.returncode == 0, server.output
    assert "Traceback" not in server.output, server.output
