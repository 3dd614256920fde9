"""eventseam for Flask: an extension on Flask-SQLAlchemy's ``db.session``, and ``flask eventseam``.

    db = SQLAlchemy()
    eventseam = FlaskEventSeam(contexts=[orders, payments, shipping])

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config["SQLALCHEMY_DATABASE_URI"] = "postgresql+psycopg://app@db/shop"
        app.config["EVENTSEAM_CONTEXTS"] = {"orders": "dual"}
        db.init_app(app)
        eventseam.init_app(app, db)
        return app

    with eventseam.transaction() as tx:        # db.session: commit on exit, rollback on error
        tx.session.add(order)
        tx.publish(OrderPlaced(aggregate_id=order.id, ...))

Under a pre-fork server, start the bus in each worker (gunicorn ``post_worker_init``:
``running_seam(app)``) and stop it when the worker exits (``worker_exit``: ``stop_seam(app)``);
``publish`` starts it on first use anyway, in the process that publishes.

Importing this package imports Flask and Flask-SQLAlchemy (the ``flask`` extra); nothing in
``engine`` or ``outbox`` imports it.
"""

from __future__ import annotations

import flask as _flask  # noqa: F401  (fail here, with Flask's own ImportError, when it is missing)
import flask_sqlalchemy as _flask_sqlalchemy  # noqa: F401  (the same for Flask-SQLAlchemy)

from .config import FlaskConfig as FlaskConfig
from .errors import FlaskConfigError as FlaskConfigError
from .errors import OutsideSessionTransactionError as OutsideSessionTransactionError
from .extension import FlaskEventSeam as FlaskEventSeam
from .extension import FlaskState as FlaskState
from .extension import get_seam as get_seam
from .extension import get_state as get_state
from .extension import publish as publish
from .extension import running_seam as running_seam
from .extension import stop_seam as stop_seam
from .extension import transaction as transaction

__all__ = [
    "FlaskConfig",
    "FlaskConfigError",
    "FlaskEventSeam",
    "FlaskState",
    "OutsideSessionTransactionError",
    "get_seam",
    "get_state",
    "publish",
    "running_seam",
    "stop_seam",
    "transaction",
]
