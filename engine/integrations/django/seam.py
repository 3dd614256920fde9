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
* Every function is thread safe. The per-process life cycle is engine.integrations.common's
  ProcessSeam, which the Flask integration shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.integrations.common import SQLITE_BUSY_TIMEOUT_SECONDS, ProcessSeam
from engine.integrations.common import build_seam as build_engine_seam

from .conf import DjangoConfig, load_config

if TYPE_CHECKING:
    from engine.seam import EventSeam

__all__ = [
    "SQLITE_BUSY_TIMEOUT_SECONDS",
    "get_config",
    "get_seam",
    "reset_seam",
    "running_seam",
    "worker_seam",
]


@dataclass(frozen=True, slots=True)
class _Current:
    """This process's configuration and EventSeam."""

    config: DjangoConfig
    seam: EventSeam


def _build() -> _Current:
    config = load_config()
    return _Current(config, build_seam(config))


_process = ProcessSeam(_build, lambda current: current.seam, name="django")


def get_config() -> DjangoConfig:
    """settings.EVENTSEAM, read and validated (EventSeamImproperlyConfigured when unusable)."""
    return _process.get().config


def get_seam() -> EventSeam:
    """This process's EventSeam, built from settings on first use (not started here)."""
    return _process.get().seam


def running_seam() -> EventSeam:
    """This process's EventSeam with its bus running (started now if needed; blocks until it is)."""
    return _process.running().seam


def worker_seam() -> EventSeam:
    """A new EventSeam from settings, for a worker process (``eventseam_worker``); never started here."""
    return build_seam(load_config())


def build_seam(config: DjangoConfig) -> EventSeam:
    """An EventSeam for ``config`` whose session_factory is bound to ``settings.database_url``."""
    return build_engine_seam(config.settings, config.contexts, middlewares=config.middlewares)


def reset_seam() -> None:
    """Stop this process's EventSeam when it was started (its bus drains) and forget it."""
    _process.reset()
