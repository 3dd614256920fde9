"""gunicorn settings for the example web app: ``gunicorn -c app/gunicorn_conf.py app.wsgi:app``.

eventseam runs the in-memory bus in a per-process anyio portal (a thread with an event loop).
Under a pre-fork server that portal must be started in each worker, after the fork, and stopped
when the worker exits (measured: a portal started before the fork hangs every call in the
workers; one never stopped hangs the interpreter's exit). So:

* ``preload_app``: the master imports the app once (settings validated, SQLite schema created)
  and forks the workers. Building the app starts nothing, so the master holds no portal; the
  workers drop the master's pooled database connections at the fork (the extension does it).
* ``post_worker_init``: start the bus in each worker before it serves its first request
  (``running_seam(app)``; without the hook the first publish would start it).
* ``worker_exit``: stop the bus when the worker exits (SIGTERM, restarts): committed events
  already handed to it are handled (it drains, up to ``EVENTSEAM_BUS__DRAIN_TIMEOUT``), then
  its worker threads and the portal stop. gunicorn also calls this hook in the master for a
  worker that vanished; it only acts in the worker's own process.

Command-line options (``--bind``, ``--workers``...) override these values.
"""

from __future__ import annotations

import os
from typing import Any

bind = "127.0.0.1:8000"
workers = 2
worker_class = "gthread"
threads = 4
preload_app = True
#: Seconds a worker gets to finish after SIGTERM: in-flight requests, then the bus's drain.
graceful_timeout = 30


def post_worker_init(worker: Any) -> None:
    """Start eventseam's bus in this worker (after the fork), before it serves requests."""
    from app.wsgi import app
    from engine.integrations.flask import running_seam

    running_seam(app)
    worker.log.info("eventseam bus started in worker %s", os.getpid())


def worker_exit(server: Any, worker: Any) -> None:
    """Drain and stop this worker's bus (in the worker's process only)."""
    if worker.pid != os.getpid():
        return
    from app.wsgi import app
    from engine.integrations.flask import stop_seam

    stop_seam(app)
    worker.log.info("eventseam bus stopped in worker %s", os.getpid())
