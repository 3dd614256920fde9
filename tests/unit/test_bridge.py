"""SyncBridge: one lazily started portal per process, usable from any thread but the loop's."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import pytest

from engine.bridge import SyncBridge, default_bridge
from engine.errors import BridgeError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from anyio.abc import TaskStatus

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def bridge() -> Iterator[SyncBridge]:
    """A bridge of its own for one test, stopped afterwards."""
    bridge = SyncBridge(name="test-bridge")
    yield bridge
    bridge.stop()


async def loop_thread_id() -> int:
    await anyio.lowlevel.checkpoint()
    return threading.get_ident()


async def add(a: int, b: int) -> int:
    await anyio.lowlevel.checkpoint()
    return a + b


def test_portal_starts_lazily(bridge: SyncBridge) -> None:
    """Creating a bridge starts nothing; the first call starts the portal."""
    assert not bridge.running
    assert bridge.call(add, 2, 3) == 5
    assert bridge.running


def test_call_runs_on_the_portal_loop_thread(bridge: SyncBridge) -> None:
    """The coroutine runs on the portal's thread, not the caller's."""
    assert bridge.call(loop_thread_id) != threading.get_ident()


def test_call_propagates_exceptions(bridge: SyncBridge) -> None:
    """An exception raised by the coroutine reaches the caller."""

    async def fail() -> None:
        raise LookupError("nope")

    with pytest.raises(LookupError, match="nope"):
        bridge.call(fail)


def test_many_threads_share_one_portal(bridge: SyncBridge) -> None:
    """Sixteen threads calling at once get their own results, all served by one loop thread."""

    def work(n: int) -> tuple[int, int]:
        return bridge.call(add, n, 1), bridge.call(loop_thread_id)

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(work, range(400)))
    assert [value for value, _ in results] == [n + 1 for n in range(400)]
    assert len({thread for _, thread in results}) == 1


def test_call_from_the_loop_thread_raises(bridge: SyncBridge) -> None:
    """A blocking call made from inside the portal's own loop is refused with BridgeError."""

    async def reenter() -> int:
        return bridge.call(add, 1, 1)

    with pytest.raises(BridgeError, match="event loop"):
        bridge.call(reenter)
    assert bridge.call(add, 1, 1) == 2


@pytest.mark.anyio
async def test_call_from_any_event_loop_thread_raises(bridge: SyncBridge) -> None:
    """Async code that calls the blocking API gets BridgeError instead of a blocked loop."""
    with pytest.raises(BridgeError, match="await the engine directly"):
        bridge.call(add, 1, 1)
    with pytest.raises(BridgeError):
        bridge.start_task_soon(add, 1, 1)
    assert not bridge.running


def test_start_task_waits_for_started(bridge: SyncBridge) -> None:
    """start_task returns the value passed to task_status.started() while the task keeps running."""
    stop = threading.Event()

    async def service(*, task_status: TaskStatus[str]) -> str:
        task_status.started("ready")
        await anyio.to_thread.run_sync(stop.wait)
        return "done"

    future, value = bridge.start_task(service)
    assert value == "ready"
    assert not future.done()
    stop.set()
    assert future.result() == "done"


def test_start_task_soon_and_cancel(bridge: SyncBridge) -> None:
    """start_task_soon returns a future; cancelling it cancels the task."""
    started = threading.Event()

    async def forever() -> None:
        started.set()
        await anyio.sleep_forever()

    future = bridge.start_task_soon(forever)
    started.wait()
    future.cancel()
    assert future.cancelled()
    assert bridge.start_task_soon(add, 4, 4).result() == 8


def test_stop_cancels_long_lived_tasks(bridge: SyncBridge) -> None:
    """Stopping the bridge cancels services still running in its portal."""
    future, _ = bridge.start_task(forever_service)
    bridge.stop()
    assert future.cancelled()
    assert not bridge.running


async def forever_service(*, task_status: TaskStatus[None]) -> None:
    task_status.started()
    await anyio.sleep_forever()


def test_stop_then_reuse_restarts_lazily(bridge: SyncBridge) -> None:
    """After stop, the next call starts a fresh portal on a new thread."""
    first = bridge.call(loop_thread_id)
    bridge.stop()
    assert first not in {t.ident for t in threading.enumerate()}
    bridge.stop()  # idempotent
    assert not bridge.running
    assert bridge.call(add, 1, 2) == 3
    assert bridge.running


def test_default_bridge_is_one_per_process() -> None:
    """default_bridge returns the same instance every time."""
    assert default_bridge() is default_bridge()


def fork() -> int:
    """os.fork without the (3.12+) multi-threaded-fork DeprecationWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def test_forked_child_gets_a_fresh_portal(bridge: SyncBridge) -> None:
    """A child forked after the portal started gets its own working portal."""
    parent_loop = bridge.call(loop_thread_id)
    read, write = os.pipe()
    pid = fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            inherited = bridge.running
            answer = bridge.call(add, 20, 22)
            os.write(write, f"{inherited} {answer} {bridge.running}".encode())
            bridge.stop()
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        reported = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert reported == "False 42 True"
    assert bridge.call(loop_thread_id) == parent_loop


def run_script(script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter (the timeout only guards against a hang)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_interpreter_exits_with_a_portal_running() -> None:
    """A process that used the bridge (and ran worker threads) exits normally."""
    result = run_script(
        """
        import anyio.to_thread
        from engine.bridge import default_bridge

        async def work():
            return await anyio.to_thread.run_sync(lambda: 41) + 1

        print(default_bridge().call(work))
        """
    )
    assert (result.returncode, result.stdout.strip()) == (0, "42"), result.stderr


def test_forked_child_and_parent_both_exit_normally() -> None:
    """After a fork, the child's and the parent's portals both stop at their exits."""
    result = run_script(
        """
        import os, sys, warnings
        import anyio
        from engine.bridge import default_bridge

        async def ping():
            await anyio.sleep(0)
            return "pong"

        bridge = default_bridge()
        assert bridge.call(ping) == "pong"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            assert bridge.call(ping) == "pong"
            sys.exit(0)  # normal exit: atexit stops the child's own portal
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
        """
    )
    assert (result.returncode, result.stdout.strip()) == (0, "child 0"), result.stderr
