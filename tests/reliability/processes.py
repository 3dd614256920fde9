"""Relay and worker processes under test, and the chaos loop that SIGKILLs and restarts them.

A ``Fleet`` keeps a number of *roles* running ("relay-0", "worker-1"...), each started by its
spawn function; ``kill`` SIGKILLs a role's process, waits for it and starts a fresh one (its log
is a new file: ``<role>.<generation>.log``). ``chaos`` kills random roles at random moments,
each after the restarted fleet made progress, so every kill lands mid-stream.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from tests.kafka_broker import REPO_ROOT, relay_env, spawn_relay, wait_for
from tests.reliability.app import PARTITIONS

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Iterator
    from pathlib import Path

#: ``eventseam --app APP worker ...`` without the console script (argv: APP, worker options).
WORKER = (
    "import sys; from engine.cli.worker import worker; "
    "worker(sys.argv[2:], obj={'app_path': sys.argv[1]})"
)


def relay_environment(
    database_url: str, bootstrap: str, prefix: str, **relay: object
) -> dict[str, str]:
    """Environment of an ``eventseam relay`` process relaying the ``stream`` context."""
    env = relay_env(database_url, bootstrap, prefix, **relay)
    env.update(
        {
            "PYTHONFAULTHANDLER": "1",
            "EVENTSEAM_CONTEXTS__STREAM": "broker",
            "EVENTSEAM_TOPICS__STREAM__PARTITIONS": str(PARTITIONS),
            "EVENTSEAM_KAFKA__ENABLE_IDEMPOTENCE": "off",
        }
    )
    return env


def spawn_worker(
    app: str, contexts: list[str], env: dict[str, str], log: Path, *options: str
) -> subprocess.Popen[bytes]:
    """``eventseam --app APP worker --context ... [options]`` in a subprocess; output appended
    to ``log``."""
    chosen = [argument for context in contexts for argument in ("--context", context)]
    command = [sys.executable, "-c", WORKER, app, *chosen, *options]
    with log.open("ab") as output:
        return subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )


@contextmanager
def running_worker(
    app: str, contexts: list[str], env: dict[str, str], log: Path, *options: str
) -> Iterator[subprocess.Popen[bytes]]:
    """``spawn_worker``'s process, killed if it still runs when the block ends."""
    process = spawn_worker(app, contexts, env, log, *options)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)


#: A line each process logs once it handles SIGTERM gracefully (before: SIGTERM kills it).
RELAY_READY = "relay.connected"
WORKER_READY = "consumer.starting"


class Fleet:
    """Named processes kept running in ``workdir``; killed ones are restarted at once.

    Each role's process logs to ``workdir/<role>.<generation>.log``.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._spawn: dict[str, Callable[[str], subprocess.Popen[bytes]]] = {}
        self._ready: dict[str, str] = {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.generations: dict[str, int] = {}
        self.kills = 0

    def add_relay(self, role: str, env: dict[str, str]) -> None:
        """Start ``eventseam relay`` with ``env`` as ``role``."""
        self._start(role, lambda name: spawn_relay(env, self.workdir, name), RELAY_READY)

    def add_worker(self, role: str, app: str, contexts: list[str], env: dict[str, str]) -> None:
        """Start ``eventseam --app APP worker --context ...`` with ``env`` as ``role``."""

        def spawn(name: str) -> subprocess.Popen[bytes]:
            return spawn_worker(app, contexts, env, self.workdir / f"{name}.log")

        self._start(role, spawn, WORKER_READY)

    def _start(
        self, role: str, spawn: Callable[[str], subprocess.Popen[bytes]], ready: str
    ) -> None:
        self._spawn[role], self._ready[role] = spawn, ready
        self.generations[role] = 0
        self.processes[role] = spawn(f"{role}.0")

    def log(self, role: str) -> Path:
        """The log file of ``role``'s current process."""
        return self.workdir / f"{role}.{self.generations[role]}.log"

    def ready(self) -> bool:
        """True when every current process logged its ready line (fails if one exited)."""
        for role, process in self.processes.items():
            if process.poll() is not None:
                raise AssertionError(f"{role} exited with {process.returncode}: {self.log(role)}")
            log = self.log(role)
            if not (log.exists() and self._ready[role] in log.read_text(errors="replace")):
                return False
        return True

    def kill(self, role: str) -> None:
        """SIGKILL ``role``'s process, wait for it to die, start a fresh one."""
        process = self.processes[role]
        if process.poll() is not None:
            raise AssertionError(f"{role} exited on its own with {process.returncode}")
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        self.kills += 1
        self.generations[role] += 1
        self.processes[role] = self._spawn[role](f"{role}.{self.generations[role]}")

    async def stop(self) -> dict[str, int]:
        """Once every process is ready, SIGTERM them all; their exit codes by role."""
        await wait_for(self.ready, timeout=60, message=f"processes ready; see {self.workdir}")
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        return {role: self._exit_code(process) for role, process in self.processes.items()}

    @staticmethod
    def _exit_code(process: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
        """Wait for a process told to stop; one still alive after ``timeout`` gets SIGABRT, so
        its log ends with every thread's stack (PYTHONFAULTHANDLER), then SIGKILL."""
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
            return process.wait()

    def kill_all(self) -> None:
        """SIGKILL whatever still runs (cleanup after a failure)."""
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(30)


async def chaos(
    fleet: Fleet,
    roles: list[str],
    *,
    kills: int,
    progress: Callable[[], int],
    working: Callable[[], bool],
    done: Callable[[], bool],
    rng: random.Random,
    pause: tuple[float, float] = (0.2, 1.5),
    timeout: float = 120.0,  # noqa: ASYNC109 - a progress budget per kill, not a cancel scope
) -> int:
    """SIGKILL random ``roles`` at random moments: ``kills`` times at least, and on while ``working()``.

    Before each kill the fleet must have made progress (``progress()`` grew) since the previous
    one, unless ``done()`` (nothing left to do); then a random pause in ``pause`` seconds.
    Returns the kills made.
    """
    while fleet.kills < kills or working():
        mark = progress()
        await wait_for(
            lambda: progress() > mark or done(),  # noqa: B023 - awaited at once
            timeout=timeout,
            interval=0.1,
            message=f"progress after kill {fleet.kills}",
        )
        await anyio.sleep(rng.uniform(*pause))
        await anyio.to_thread.run_sync(fleet.kill, rng.choice(roles))
    return fleet.kills
