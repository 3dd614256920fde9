"""One EventSeam per process for sync hosts (Django, Flask), safe under pre-fork servers.

``ProcessSeam`` builds the process's EventSeam on first use (again in a forked child, where the
parent's bus and portal do not exist), starts its bus on demand in the bridge's portal (so only
in the process that asks, after a pre-fork server forked), and stops it at interpreter exit
before that portal. ``build_seam`` gives an EventSeam handler sessions on an engine of its own.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import structlog
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from engine.seam import EventSeam

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from engine.contexts import BoundedContext
    from engine.settings import EventSeamSettings
    from engine.types import Middleware

__all__ = ["SQLITE_BUSY_TIMEOUT_SECONDS", "ProcessSeam", "build_seam", "engine_of"]

#: SQLite busy timeout of engines built here (the host and the handlers write the same file).
SQLITE_BUSY_TIMEOUT_SECONDS: Final = 30

_log = structlog.get_logger(__name__)
T = TypeVar("T")


def engine_of(seam: EventSeam) -> Engine | None:
    """The Engine the seam's ``session_factory`` is bound to (None without one)."""
    factory: sessionmaker[Session] | None = seam.session_factory
    bind = factory.kw.get("bind") if factory is not None else None
    return bind if isinstance(bind, Engine) else None


def build_seam(
    settings: EventSeamSettings,
    contexts: Iterable[BoundedContext],
    *,
    middlewares: Sequence[Middleware] = (),
) -> EventSeam:
    """An EventSeam whose ``session_factory`` uses a new engine on ``settings.database_url``.

    Nothing connects until a handler opens a session; SQLite gets a long busy timeout.
    """
    url = settings.database_url
    options: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        options = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}}
    sessions = sessionmaker(create_engine(url, **options), expire_on_commit=False)
    return EventSeam(settings, contexts, session_factory=sessions, middlewares=middlewares)


@dataclass(slots=True)
class _Entry(Generic[T]):
    """What a ProcessSeam built in one process, and whether its bus was started."""

    pid: int
    value: T
    started: bool = False


_holders: weakref.WeakSet[ProcessSeam[Any]] = weakref.WeakSet()
_hooks_lock = threading.Lock()
_fork_hook_installed = False
_atexit_installed = False


@dataclass(eq=False)
class ProcessSeam(Generic[T]):
    """One ``T`` holding an EventSeam (``seam_of``) per process, built by ``build`` on first use.

    Contract:

    * A forked child builds its own on first use; at the fork its copies of the parent's engine
      pools (the seam's and ``fork_engines``) are dropped without closing the parent's
      connections (``dispose(close=False)``, as SQLAlchemy advises for ``os.fork``).
    * ``running`` starts the bus (``EventSeam.start_background``, in the bridge's portal) in the
      calling process only, never at construction: safe under pre-fork servers.
    * A started bus is stopped at interpreter exit (it drains, up to ``bus.drain_timeout``),
      before the bridge's portal stops.
    * ``reset`` stops a started bus and forgets the value; with ``owns_engine`` it also
      disposes the seam's engine. Every method is thread safe.
    """

    build: Callable[[], T]
    seam_of: Callable[[T], EventSeam]
    owns_engine: bool = True
    name: str = "eventseam"
    #: More engines whose pools a forked child drops (the host's, used before the fork).
    fork_engines: tuple[Engine, ...] = ()
    _entry: _Entry[T] | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        _install_fork_hook()
        _holders.add(self)

    def get(self) -> T:
        """This process's value, built on first use (its bus not started here)."""
        return self._current().value

    def running(self) -> T:
        """This process's value with its seam's bus running (started now if needed; blocks)."""
        global _atexit_installed
        entry = self._current()
        with self._lock:
            if not entry.started:
                self.seam_of(entry.value).start_background()
                entry.started = True
            with _hooks_lock:
                if not _atexit_installed:
                    atexit.register(_stop_all_at_exit)  # after the bridge's hook: runs first
                    _atexit_installed = True
        return entry.value

    @property
    def started(self) -> bool:
        """True when this process started the bus of its value."""
        entry = self._entry
        return entry is not None and entry.pid == os.getpid() and entry.started

    def reset(self) -> None:
        """Stop the bus when this process started it (it drains) and forget the value."""
        with self._lock:
            entry, self._entry = self._entry, None
        if entry is None or entry.pid != os.getpid():
            return
        seam = self.seam_of(entry.value)
        try:
            if entry.started:
                seam.stop()
        finally:
            engine = engine_of(seam)
            if self.owns_engine and engine is not None:
                engine.dispose()

    def _current(self) -> _Entry[T]:
        pid = os.getpid()
        entry = self._entry
        if entry is not None and entry.pid == pid:
            return entry
        with self._lock:
            if self._entry is None or self._entry.pid != pid:
                self._entry = _Entry(pid, self.build())
            return self._entry

    def _after_fork_in_child(self) -> None:
        """Fresh lock; the parent's pooled connections are dropped without closing them."""
        self._lock = threading.Lock()
        entry = self._entry
        engines: list[Engine | None] = list(self.fork_engines)
        if entry is not None:
            engines.append(engine_of(self.seam_of(entry.value)))
        for engine in dict.fromkeys(engines):
            if engine is not None:
                engine.dispose(close=False)


def _install_fork_hook() -> None:
    global _fork_hook_installed
    with _hooks_lock:
        if not _fork_hook_installed:
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _fork_hook_installed = True


def _after_fork_in_child() -> None:
    global _hooks_lock
    _hooks_lock = threading.Lock()
    for holder in list(_holders):
        holder._after_fork_in_child()


def _stop_all_at_exit() -> None:
    """Drain every bus this process started (atexit runs this before the bridge's portal stops)."""
    for holder in list(_holders):
        if not holder.started:
            continue
        try:
            holder.reset()
        except Exception as exc:  # exit goes on whatever happens; say what was lost
            _log.error("integration.stop_failed", integration=holder.name, error=repr(exc))
