"""The sync bridge: how threads of a sync host (Django, Flask) reach the asyncio engine.

One anyio ``BlockingPortal`` per process, running an asyncio loop in a daemon thread::

    bridge = default_bridge()
    bridge.call(bus.publish, event)                 # blocks until the coroutine returns
    future, _ = bridge.start_task(seam.run)         # a long-lived service inside the portal

Contract:

* The portal starts lazily on first use, so a pre-fork server (gunicorn, uwsgi) that imports the
  app before forking never hands a started portal to its workers. A child process gets a fresh
  portal: the bridge remembers ``os.getpid()`` and forgets a portal inherited through ``fork``
  (its loop thread does not exist in the child; stopping it there would hang).
* The portal is stopped at interpreter exit (``atexit``); a portal never stopped hangs exit.
  ``stop()`` stops it earlier; the next call starts a new one.
* Every method is thread safe. The blocking methods raise BridgeError when the calling thread
  runs an event loop (blocking it would deadlock): async code awaits the engine directly.

The loop thread is started here rather than with ``anyio.from_thread.start_blocking_portal``
because that context manager's generator, inherited by a forked child, runs ``portal.call`` in
its ``finally`` when garbage-collected and hangs the child's exit (measured).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading
import weakref
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, TypeVarTuple

import anyio
from anyio.from_thread import BlockingPortal

from .errors import BridgeError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_bridges: weakref.WeakSet[SyncBridge] = weakref.WeakSet()
_hooks_installed = False
_hooks_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class _Running:
    """A started portal: the portal, its loop thread and the process that started it."""

    portal: BlockingPortal
    thread: threading.Thread
    pid: int


class SyncBridge:
    """One blocking portal per process, started lazily after fork, stopped at exit.

    ``backend`` is the anyio backend of the portal's loop (asyncio: aiokafka is asyncio-only).
    """

    def __init__(self, *, backend: str = "asyncio", name: str = "eventseam-bridge") -> None:
        self.backend = backend
        self.name = name
        self._lock = threading.Lock()
        self._running: _Running | None = None
        _install_process_hooks()
        _bridges.add(self)

    @property
    def running(self) -> bool:
        """True when this process has a started portal."""
        running = self._running
        return running is not None and running.pid == os.getpid()

    def call(self, func: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T:
        """Run ``await func(*args)`` on the portal's loop and block until it returns or raises."""
        _refuse_in_event_loop("call")
        return self._portal().call(func, *args)

    def start_task_soon(
        self, func: Callable[[*Ts], Awaitable[T]], *args: *Ts, name: object = None
    ) -> Future[T]:
        """Start ``func(*args)`` as a task in the portal; return its future at once.

        Cancelling the future cancels the task. The task lives until it returns, its future is
        cancelled, or the portal stops (``stop`` cancels what is still running).
        """
        _refuse_in_event_loop("start_task_soon")
        return self._portal().start_task_soon(func, *args, name=name)

    def start_task(
        self, func: Callable[..., Awaitable[T]], *args: object, name: object = None
    ) -> tuple[Future[T], Any]:
        """Start ``func(*args, task_status=...)`` in the portal; block until it reports started.

        Returns the task's future and the value it passed to ``task_status.started()`` (this is
        ``TaskGroup.start`` for sync code: services with ``run(*, task_status)`` start this way).
        """
        _refuse_in_event_loop("start_task")
        return self._portal().start_task(func, *args, name=name)

    def stop(self, *, cancel_remaining: bool = True) -> None:
        """Stop the portal and join its thread; no-op when not started. The next call restarts it.

        ``cancel_remaining`` cancels tasks still running in the portal (long-lived services);
        False waits for them to finish.
        """
        _refuse_in_event_loop("stop")
        with self._lock:
            running, self._running = self._running, None
        if running is None or running.pid != os.getpid():
            return
        with contextlib.suppress(RuntimeError):  # the portal's loop already ended
            running.portal.call(running.portal.stop, cancel_remaining)
        running.thread.join()

    def _portal(self) -> BlockingPortal:
        """The started portal of this process, starting one when needed."""
        running = self._running
        pid = os.getpid()
        if running is not None and running.pid == pid:
            return running.portal
        with self._lock:
            if self._running is None or self._running.pid != pid:
                self._running = self._start(pid)
            return self._running.portal

    def _start(self, pid: int) -> _Running:
        ready: Future[BlockingPortal] = Future()
        thread = threading.Thread(
            target=self._serve, args=(ready,), name=f"{self.name}-{pid}", daemon=True
        )
        thread.start()
        return _Running(portal=ready.result(), thread=thread, pid=pid)

    def _serve(self, ready: Future[BlockingPortal]) -> None:
        """Body of the portal thread: run the loop until the portal is stopped."""

        async def serve() -> None:
            async with BlockingPortal() as portal:
                ready.set_result(portal)
                await portal.sleep_until_stopped()

        try:
            anyio.run(serve, backend=self.backend)
        except BaseException as exc:
            if ready.done():
                raise
            ready.set_exception(exc)  # the starting thread re-raises it

    def _after_fork_in_child(self) -> None:
        """Forget the parent's portal (its thread does not exist here) and any held lock."""
        self._lock = threading.Lock()
        self._running = None


def in_event_loop() -> bool:
    """True when the current thread runs an asyncio event loop (blocking here would stall it)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _refuse_in_event_loop(method: str) -> None:
    """Raise BridgeError when the current thread runs an event loop."""
    if not in_event_loop():
        return
    raise BridgeError(
        f"SyncBridge.{method} blocks, so it cannot be called from a thread that runs an event "
        "loop (it would block or deadlock that loop); in async code await the engine directly "
        "(for example `await seam.publish_async(...)` or `await bus.publish(...)`)"
    )


def _install_process_hooks() -> None:
    """Once per process: forget portals in forked children, stop portals at exit."""
    global _hooks_installed
    with _hooks_lock:
        if _hooks_installed:
            return
        os.register_at_fork(after_in_child=_reset_after_fork)
        atexit.register(_stop_all)
        _hooks_installed = True


def _reset_after_fork() -> None:
    global _hooks_lock, _default_lock
    _hooks_lock = threading.Lock()
    _default_lock = threading.Lock()
    for bridge in list(_bridges):
        bridge._after_fork_in_child()


def _stop_all() -> None:
    for bridge in list(_bridges):
        with contextlib.suppress(BridgeError):  # exit from inside a running loop: leave it be
            bridge.stop()


_default: SyncBridge | None = None
_default_lock = threading.Lock()


def default_bridge() -> SyncBridge:
    """The process-wide bridge (created on first use; its portal starts on first call)."""
    global _default
    bridge = _default
    if bridge is not None:
        return bridge
    with _default_lock:
        if _default is None:
            _default = SyncBridge()
        return _default
