"""engine.health: the probes' verdicts, and /healthz and /readyz served over real HTTP."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
import pytest
from aiokafka.errors import KafkaConnectionError

from engine import health
from engine.errors import error_line
from engine.health import Condition, Health
from tests.http_probe import probe

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def probes() -> Iterator[tuple[Health, int]]:
    """A Health served on a free local port; closed after the test."""
    state = Health(stall_after=0.2)
    server = health.serve(state, 0, "127.0.0.1")
    yield state, server.port
    server.close()


def test_condition_is_ready_only_while_running_without_failures() -> None:
    """starting -> running is ready; a failing dependency is not, until it recovers; stopping never is."""
    condition = Condition()
    assert (condition.state, condition.ready) == ("starting", False)
    condition.running()
    assert condition.ready
    condition.failing("broker", "KafkaConnectionError: refused")
    condition.failing("database", "OperationalError: gone")
    assert not condition.ready
    assert condition.problems == {
        "broker": "KafkaConnectionError: refused",
        "database": "OperationalError: gone",
    }
    condition.recovered("broker")
    assert condition.problems == {"database": "OperationalError: gone"}
    condition.recovered("database")
    assert condition.ready
    condition.stopping()
    condition.running()  # a late start report does not undo a stop
    assert (condition.state, condition.ready) == ("stopping", False)


def test_error_line_is_the_type_and_first_line() -> None:
    """What /readyz shows of an exception: its type and its message's first line."""
    assert error_line(OSError("refused\nmore detail")) == "OSError: refused"
    # aiokafka's errors name their type in their message already: once is enough
    broker_down = KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")
    assert (
        error_line(broker_down)
        == "KafkaConnectionError: Unable to bootstrap from [('127.0.0.1', 1)]"
    )
    assert error_line(TimeoutError()) == "TimeoutError"


def test_readyz_follows_the_watched_conditions(probes: tuple[Health, int]) -> None:
    """503 with nothing watched or while starting, 200 running, 503 naming a failing dependency."""
    state, port = probes
    status, body = probe(port, "/readyz")
    assert (status, body) == (503, {"status": "failing", "checks": {}})
    relay = Condition()
    state.watch("relay", relay)
    status, body = probe(port, "/readyz")
    assert status == 503
    assert body["checks"]["relay"] == {"state": "starting", "failing": {}}
    relay.running()
    assert probe(port, "/readyz") == (
        200,
        {"status": "ok", "checks": {"relay": {"state": "running", "failing": {}}}},
    )
    relay.failing("broker", "orders: KafkaConnectionError")
    status, body = probe(port, "/readyz")
    assert status == 503
    assert body["checks"]["relay"]["failing"] == {"broker": "orders: KafkaConnectionError"}
    relay.recovered("broker")
    assert probe(port, "/readyz")[0] == 200
    relay.stopping()
    assert probe(port, "/readyz")[0] == 503


def test_healthz_fails_once_the_heartbeat_is_older_than_stall_after(
    probes: tuple[Health, int],
) -> None:
    """200 after a tick; 503 when no tick came for longer than stall_after; a failing dependency does not matter."""
    state, port = probes
    failing = Condition()
    failing.failing("broker", "down")
    state.watch("relay", failing)
    state.tick()
    status, body = probe(port, "/healthz")
    assert status == 200
    assert body["status"] == "ok"
    time.sleep(0.3)
    status, body = probe(port, "/healthz")
    assert status == 503
    assert body["event_loop_silent_seconds"] > 0.2
    state.tick()
    assert probe(port, "/healthz")[0] == 200


def test_unknown_path_is_404_and_head_has_no_body(probes: tuple[Health, int]) -> None:
    """Only the two probe paths exist; HEAD gets the status without a body."""
    state, port = probes
    state.tick()
    assert probe(port, "/metrics")[0] == 404
    assert probe(port, "/healthz", method="HEAD") == (200, None)


@pytest.mark.anyio
async def test_heartbeat_ticks_while_the_loop_runs() -> None:
    """heartbeat keeps liveness fresh well past stall_after; once it is cancelled, liveness fails."""
    state = Health(stall_after=0.2, interval=0.02)
    async with anyio.create_task_group() as group:
        await group.start(state.heartbeat)
        for _ in range(10):
            await anyio.sleep(0.05)
            assert state.liveness()[0]
        group.cancel_scope.cancel()
    await anyio.sleep(0.3)
    assert not state.liveness()[0]
