"""Liveness and readiness probes of a relay or worker process: ``/healthz`` and ``/readyz``.

``eventseam relay --health-port 8080`` and ``eventseam worker ... --health-port 8080`` serve them
over HTTP, for Kubernetes' liveness and readiness probes or a supervisor's health check:

    GET /healthz   200 while the process's event loop runs: a heartbeat task ticks every
                   ``HEARTBEAT`` (1) seconds, and when the last tick is older than ``stall_after``
                   (``STALL_AFTER``, 30 s) the answer is 503: the loop is blocked, restart it.
    GET /readyz    200 once each watched component (the relay, the consumer runner) has started
                   (connected, topics created, consumers in their groups) and while none reports
                   a failing dependency; 503 otherwise, naming the component's state and each
                   failing dependency with its last error.

Both answer JSON, for example ``{"status": "failing", "checks": {"relay": {"state": "running",
"failing": {"broker": "eventseam.orders: NodeNotReadyError: ..."}}}}``. A dependency outage
fails readiness only, never liveness: the relay and the runner wait outages out by themselves
(they never exit on one), so restarting them would not help.

A component reports through its ``Condition`` (the relay's and the runner's ``condition``): the
event loop writes it, the server's thread reads it (a state string and a dict copied whole, so no
lock is needed). The server is the standard library's wsgiref, in daemon threads: no extra.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import anyio
import structlog

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from wsgiref.types import StartResponse, WSGIEnvironment

__all__ = [
    "BROKER",
    "DATABASE",
    "HEARTBEAT",
    "STALL_AFTER",
    "Condition",
    "Health",
    "HealthServer",
    "serve",
]

log = structlog.get_logger(__name__)

#: Seconds between two ticks of the event loop's heartbeat.
HEARTBEAT: Final = 1.0
#: Default seconds without a tick after which ``/healthz`` answers 503.
STALL_AFTER: Final = 30.0

STARTING, RUNNING, STOPPING = "starting", "running", "stopping"
#: The dependencies a relay or runner reports on (``Condition.failing``).
BROKER, DATABASE = "broker", "database"


class Condition:
    """What a long-running component says about itself: its state and its failing dependencies.

    ``state`` is ``"starting"`` until the component calls ``running()``, ``"stopping"`` after
    ``stopping()``. ``failing(dependency, reason)`` records an outage (the latest reason wins)
    until ``recovered(dependency)``; ``recovered`` costs one truth test when nothing failed.
    """

    __slots__ = ("_failing", "state")

    def __init__(self) -> None:
        self.state = STARTING
        self._failing: dict[str, str] = {}

    def running(self) -> None:
        """Started: connected and doing its work."""
        if self.state == STARTING:
            self.state = RUNNING

    def stopping(self) -> None:
        """Told to stop: draining, no longer ready."""
        self.state = STOPPING

    def failing(self, dependency: str, reason: str) -> None:
        """``dependency`` (``"broker"``, ``"database"``, ...) failed with ``reason``."""
        self._failing[dependency] = reason

    def recovered(self, dependency: str) -> None:
        """``dependency`` works again."""
        if self._failing:
            self._failing.pop(dependency, None)

    @property
    def problems(self) -> dict[str, str]:
        """The failing dependencies and their last errors (a copy)."""
        return dict(self._failing)

    @property
    def ready(self) -> bool:
        """Running, with no failing dependency."""
        return self.state == RUNNING and not self._failing


class Health:
    """The probes' state for one process: the loop's heartbeat and the watched components."""

    def __init__(self, *, stall_after: float = STALL_AFTER, interval: float = HEARTBEAT) -> None:
        self.stall_after, self.interval = stall_after, interval
        self._last_tick = time.monotonic()
        self._watched: dict[str, Condition] = {}

    def watch(self, name: str, condition: Condition) -> None:
        """Include ``condition`` in ``/readyz`` as ``name``."""
        self._watched[name] = condition

    def tick(self) -> None:
        """The event loop ran: called by ``heartbeat``."""
        self._last_tick = time.monotonic()

    async def heartbeat(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Tick every ``interval`` seconds until cancelled (run it in the process's event loop)."""
        self.tick()
        task_status.started()
        while True:
            await anyio.sleep(self.interval)
            self.tick()

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        """(live, report): live while the last tick is at most ``stall_after`` seconds old."""
        silent = time.monotonic() - self._last_tick
        live = silent <= self.stall_after
        report = {"status": "ok" if live else "failing", "event_loop_silent_seconds": silent}
        return live, report

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, report): ready when every watched component is (none watched: not ready)."""
        checks: dict[str, Any] = {}
        for name, condition in list(self._watched.items()):
            checks[name] = {"state": condition.state, "failing": condition.problems}
        ready = bool(self._watched) and all(c.ready for c in list(self._watched.values()))
        return ready, {"status": "ok" if ready else "failing", "checks": checks}

    def wsgi_app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """``/healthz`` and ``/readyz`` as JSON (GET or HEAD); 404 for any other path."""
        probes: dict[str, Callable[[], tuple[bool, dict[str, Any]]]] = {
            "/healthz": self.liveness,
            "/readyz": self.readiness,
        }
        probe = probes.get(environ.get("PATH_INFO", ""))
        if probe is None:
            status, body = "404 Not Found", {"error": "not found; try /healthz or /readyz"}
        else:
            ok, body = probe()
            status = "200 OK" if ok else "503 Service Unavailable"
        payload = json.dumps(body).encode()
        start_response(
            status,
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
        )
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [payload]


@dataclass(frozen=True, slots=True)
class HealthServer:
    """A running probe server: the bound ``port`` and ``close()`` (stops and joins its thread)."""

    port: int
    close: Callable[[], None]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes arrive every few seconds: no access log line for each."""


def serve(health: Health, port: int, addr: str = "0.0.0.0") -> HealthServer:
    """Serve ``health``'s probes on ``addr:port`` (0: any free port) from a daemon thread.

    Raises OSError when the port cannot be bound.
    """
    server = make_server(
        addr, port, health.wsgi_app, server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="eventseam-health", daemon=True)
    thread.start()

    def close() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    bound = int(server.server_port)
    log.info("health.serving", addr=addr, port=bound, paths=["/healthz", "/readyz"])
    return HealthServer(bound, close)
