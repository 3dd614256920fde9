"""The example web app for WSGI servers: ``gunicorn -c app/gunicorn_conf.py app.wsgi:app``.

Importing this module builds the app (a WSGI server needs a module-level application; the rest
of ``app`` wires nothing at import). It reads and validates the settings and, on SQLite, creates
the schema, but starts nothing that runs: no thread, no event loop, no portal. So a pre-fork
server may import it in its master (gunicorn ``preload_app``) and fork workers safely; each
worker starts its own bus (app/gunicorn_conf.py).
"""

from __future__ import annotations

from app.web import create_app

app = create_app()
