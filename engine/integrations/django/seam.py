"""The process's EventSeam in a Django project: built from settings.EVENTSEAM on first use.

    seam = get_seam()           # built from settings (its bus not started)
    seam = running_seam()       # the same, its bus running in the bridge's portal
    seam = worker_seam()        # a new one for `eventseam_worker` (the caller disposes its engine)

Contract:

* One EventSeam per process. A forked child (the workers of a pre-fork gunicorn/uwsgi master)
  builds its own on first use: the parent's bus and portal do not exist there.
* The bus starts on the first ``publish`` that dispatches locally, in the process that
  publishes (``EventSeam.start_background``), never at import time or in ``AppConfig.ready``, so
  a pre-fork master never starts it.
* At interpreter exit a started seam is stopped (its bus drains, up to ``bus.drain_timeout``)
  before the bridge's portal stops.
* Its ``session_factory`` is a SQLAlchemy sessionmaker on ``settings.database_url`` (the same
  database, its own connections; created lazily, nothing connects until used): handlers'
  ``HandlerContext.session``/``publish`` and the consumer runner's inbox run their own
  transactions on it. Publishing from Django never uses it (engine.integrations.django.publish).
* ``reset_seam`` stops and forgets it (and disposes its engine); Django's ``setting_changed``
  signal for ``EVENTSEAM`` or ``DATABASES`` (``override_settings``) calls it.
* Every function is thread safe.
"""

from __future__ import annotations

import atexit
import os
import threading
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from engine.seam import EventSeam

from .conf import DjangoConfig, load_config

__all__ = ["get_config", "get_seam", "reset_seam", "running_seam", "worker_seam"]

#: SQLite busy timeout of the handlers' engine (Django and the handlers write the same file).
SQLITE_BUSY_TIMEOUT_SECONDS = 30

_log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Current:
    """This process's configuration and EventSeam, and whether its bus was started."""

    pid: int
    config: DjangoConfig
    seam: EventSeam
    started: bool = False


_lock = threading.Lock()
_current: _Current | None = None
_atexit_installed = False
_fork_hook_installed = False


def get_config() -> DjangoConfig:
    """settings.EVENTSEAM, read and validated (EventSeamImproperlyConfigured when unusable)."""
    return _state().config


def get_seam() -> EventSeam:
    """This process's EventSeam, built from settings on first use (not started here)."""
    return _state().seam


def running_seam() -> EventSeam:
    """This process's EventSeam with its bus running (started now if needed; blocks until it is)."""
    global _atexit_installed
    state = _state()
    with _lock:
        if not state.started:
            state.seam.start_background()
            state.started = True
            if not _atexit_installed:
                atexit.register(_stop_at_exit)
                _atexit_installed = True
    return state.seam


def worker_seam() -> EventSeam:
    """A new EventSeam from settings, for a worker process (``eventseam_worker``); never started here."""
    return build_seam(load_config())


def build_seam(config: DjangoConfig) -> EventSeam:
    """An EventSeam for ``config`` whose session_factory is bound to ``settings.database_url``."""
    url = config.settings.database_url
    options: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        options = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}}
    sessions = sessionmaker(create_engine(url, **options), expire_on_commit=False)
    return EventSeam(config.settings, config.contexts, session_factory=sessions)


def reset_seam() -> None:
    """Stop this process's EventSeam when it was started (its bus drains) and forget it."""
    global _current
    with _lock:
        state, _current = _current, None
    if state is None or state.pid != os.getpid():
        return
    try:
        if state.started:
            state.seam.stop()
    finally:
        engine = _engine_of(state.seam)
        if engine is not None:
            engine.dispose()


def _state() -> _Current:
    global _current
    pid = os.getpid()
    state = _current
    if state is not None and state.pid == pid:
        return state
    _install_fork_hook()
    with _lock:
        if _current is None or _current.pid != pid:
            config = load_config()
            _current = _Current(pid, config, build_seam(config))
        return _current


def _stop_at_exit() -> None:
    """Drain the started bus before the bridge's portal stops (atexit runs this first: LIFO)."""
    try:
        reset_seam()
    except Exception as exc:  # exit goes on whatever happens; say what was lost
        _log.error("eventseam.django.stop_failed", error=repr(exc))


def _install_fork_hook() -> None:
    """Once per process: a forked child gets a fresh lock (the parent's may be held)."""
    global _fork_hook_installed
    if not _fork_hook_installed:
        _fork_hook_installed = True
        os.register_at_fork(after_in_child=_after_fork_in_child)


def _after_fork_in_child() -> None:
    """Fresh lock; the parent's pooled connections are dropped without closing them (shared sockets)."""
    global _lock
    _lock = threading.Lock()
    state = _current
    engine = _engine_of(state.seam) if state is not None else None
    if engine is not None:
        engine.dispose(close=False)


def _engine_of(seam: EventSeam) -> Engine | None:
    factory: sessionmaker[Session] | None = seam.session_factory
    bind = factory.kw.get("bind") if factory is not None else None
    return bind if isinstance(bind, Engine) else None
