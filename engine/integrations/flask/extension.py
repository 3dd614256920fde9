"""The Flask extension: eventseam on Flask-SQLAlchemy's ``db.session``.

    db = SQLAlchemy()
    eventseam = FlaskEventSeam(contexts=[orders, payments, shipping])

    def create_app() -> Flask:
        app = Flask(__name__)
        db.init_app(app)
        eventseam.init_app(app, db)          # settings from app.config (EVENTSEAM_*)
        return app

    @app.post("/orders")
    def place():
        db.session.add(order)
        eventseam.publish(OrderPlaced(...))   # the outbox row is inserted now, in db.session's transaction
        db.session.commit()                   # handlers run after this commit, never after a rollback

Contract of ``publish(*events, context=None)`` (``FlaskEventSeam.publish`` or the module's
``publish`` on ``current_app``):

1. Refused (OutsideSessionTransactionError, nothing written) without an application context or
   when the context's ``db.session`` has no open transaction (it begins one on the first
   ``add``/``execute``); the events would have no business write to commit with.
2. This process's EventSeam is running first (its bus started in the bridge's portal on first
   need, in the process that publishes: under a pre-fork server, in the worker, after the fork),
   so the routing modes come from the flag table too.
3. ``EventSeam.publish(db.session, ...)`` prepares the events (ownership, stamping, size guard,
   modes) and executes the outbox INSERT at once on the request's Session, in its open
   transaction or SAVEPOINT; nothing is deferred to a flush hook, nothing is committed.
4. After ``db.session.commit()`` the events of locally dispatching contexts go to the bus; a
   rollback (or a rolled-back ``begin_nested`` savepoint, for the events published inside it)
   drops them.

``async def`` views (``flask[async]``) publish the same way: they run in their own event loop
with the request's application context, hence on the request's Session; the bus is started from
a helper thread there (a blocking portal call cannot run on an event loop's thread).

Handlers run in the engine's threads without an application context. ``HandlerContext.session``
is a Session of its own transaction on Flask-SQLAlchemy's default engine (the app's models work
with it), and ``ctx.publish`` follow-ups commit with it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

import structlog
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from engine.bridge import in_event_loop
from engine.integrations.common import Problem, ProcessSeam
from engine.seam import EventSeam
from engine.unit_of_work import UnitOfWork

from .config import FlaskConfig, diagnose
from .errors import FlaskConfigError, OutsideSessionTransactionError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy
    from sqlalchemy import Engine

    from engine.contexts import BoundedContext
    from engine.events import DomainEvent
    from engine.types import Middleware

__all__ = [
    "EXTENSION_KEY",
    "FlaskEventSeam",
    "FlaskState",
    "get_seam",
    "get_state",
    "publish",
    "running_seam",
    "stop_seam",
    "transaction",
]

#: Where init_app keeps the app's FlaskState: ``app.extensions["eventseam"]``.
EXTENSION_KEY: Final = "eventseam"

_log = structlog.get_logger(__name__)


@dataclass(eq=False)
class FlaskState:
    """What ``init_app`` keeps for one app: its configuration, database and per-process EventSeam.

    ``given_contexts`` are the contexts passed to the extension (None: ``app.config`` lists
    them); ``warnings`` are the configuration's non-fatal problems.
    """

    config: FlaskConfig
    db: SQLAlchemy
    engine: Engine
    process: ProcessSeam[EventSeam]
    given_contexts: tuple[BoundedContext, ...] | None
    warnings: tuple[Problem, ...] = ()

    @property
    def seam(self) -> EventSeam:
        """This process's EventSeam (built on first use in each process; not started here)."""
        return self.process.get()

    def running(self) -> EventSeam:
        """This process's EventSeam, its bus running (started now when needed; blocks until it is).

        On a thread that runs an event loop (an ``async def`` view), the start runs in a helper
        thread while this one waits.
        """
        if self.process.started or not in_event_loop():
            return self.process.running()
        with ThreadPoolExecutor(1, thread_name_prefix="eventseam-start") as helper:
            return helper.submit(self.process.running).result()


class FlaskEventSeam:
    """eventseam for Flask apps using Flask-SQLAlchemy; one instance may serve several apps.

    ``FlaskEventSeam(app, db, contexts=[...])``, or ``FlaskEventSeam(contexts=[...])`` then
    ``init_app(app, db)`` in the app factory. ``db`` defaults to the app's Flask-SQLAlchemy
    extension (initialise it first). ``contexts`` default to ``EVENTSEAM_BOUNDED_CONTEXTS``;
    ``middlewares`` wrap every handler. Thread safe.
    """

    def __init__(
        self,
        app: Flask | None = None,
        db: SQLAlchemy | None = None,
        *,
        contexts: Iterable[BoundedContext] | None = None,
        middlewares: Sequence[Middleware] = (),
    ) -> None:
        self.contexts = tuple(contexts) if contexts is not None else None
        self.middlewares = tuple(middlewares)
        if app is not None:
            self.init_app(app, db)

    def init_app(self, app: Flask, db: SQLAlchemy | None = None) -> None:
        """Read and validate ``app.config``, keep the app's state, add ``flask eventseam``.

        Builds nothing that runs: no thread, no portal, no connection (initialising an app again
        stops the bus its previous state started in this process). Raises FlaskConfigError
        listing every problem (with hints) when eventseam cannot run on this app.
        """
        db = db if db is not None else app.extensions.get("sqlalchemy")
        if db is None:
            raise FlaskConfigError(
                f"eventseam needs Flask-SQLAlchemy on app {app.name!r}: call db.init_app(app) "
                "first, or pass db to FlaskEventSeam(app, db) / init_app(app, db)"
            )
        with app.app_context():
            engines = dict(db.engines)
        default = engines.get(None)
        if default is None:
            raise FlaskConfigError(
                f"eventseam needs Flask-SQLAlchemy's default database on app {app.name!r} "
                "(SQLALCHEMY_DATABASE_URI): the outbox lives there"
            )
        url = default.url.render_as_string(hide_password=False)
        config, problems = diagnose(app.config, contexts=self.contexts, default_url=url)
        if config is None:
            raise FlaskConfigError(
                f"eventseam cannot run on app {app.name!r}:",
                [problem for problem in problems if problem.is_error],
            )
        for problem in problems:
            _log.warning("flask.config", code=problem.code, problem=problem.message)
        previous = app.extensions.get(EXTENSION_KEY)
        if isinstance(previous, FlaskState):
            previous.process.reset()  # initialised again: its bus (if started here) stops first
        process = ProcessSeam(
            _builder(config, default, self.middlewares),
            _identity,
            owns_engine=False,
            name=f"flask:{app.name}",
            fork_engines=tuple(engines.values()),
        )
        app.extensions[EXTENSION_KEY] = FlaskState(
            config, db, default, process, self.contexts, tuple(problems)
        )
        from .cli import eventseam_cli

        app.cli.add_command(eventseam_cli)

    def publish(self, *events: DomainEvent, context: str | None = None) -> None:
        """``publish`` on the current app (see the module's contract)."""
        publish(*events, context=context)

    @contextmanager
    def transaction(self) -> Iterator[UnitOfWork]:
        """``transaction`` on the current app (see the module's function)."""
        with transaction() as unit:
            yield unit

    @property
    def seam(self) -> EventSeam:
        """The current app's EventSeam in this process (not started here)."""
        return get_seam()

    def start(self, app: Flask | None = None) -> EventSeam:
        """Start the bus of ``app`` (default: the current app) in this process; see running_seam."""
        return running_seam(app)

    def stop(self, app: Flask | None = None) -> None:
        """Stop the bus of ``app`` (default: the current app) in this process; see stop_seam."""
        stop_seam(app)


def _builder(
    config: FlaskConfig, engine: Engine, middlewares: Sequence[Middleware]
) -> Callable[[], EventSeam]:
    def build() -> EventSeam:
        sessions = sessionmaker(engine, expire_on_commit=False)
        return EventSeam(
            config.settings, config.contexts, session_factory=sessions, middlewares=middlewares
        )

    return build


def _identity(seam: EventSeam) -> EventSeam:
    return seam


def get_state(app: Flask | None = None) -> FlaskState:
    """The FlaskState of ``app`` (default: the current app).

    Raises OutsideSessionTransactionError without an app and an application context, and
    FlaskConfigError when eventseam was not initialised on the app.
    """
    if app is None:
        from flask import current_app

        if not current_app:
            raise OutsideSessionTransactionError(in_app_context=False)
        app = current_app._get_current_object()  # type: ignore[attr-defined]  # werkzeug LocalProxy
    state = app.extensions.get(EXTENSION_KEY)
    if not isinstance(state, FlaskState):
        raise FlaskConfigError(
            f"eventseam is not initialised on app {app.name!r}: call "
            "FlaskEventSeam(app, db) or eventseam.init_app(app, db) in the app factory"
        )
    return state


def get_seam(app: Flask | None = None) -> EventSeam:
    """The EventSeam of ``app`` (default: the current app) in this process; not started here."""
    return get_state(app).seam


def running_seam(app: Flask | None = None) -> EventSeam:
    """The EventSeam of ``app`` with its bus running in this process (started now when needed).

    Under a pre-fork server call it in each worker after the fork (gunicorn's
    ``post_worker_init``), never in the master; ``publish`` calls it anyway.
    """
    return get_state(app).running()


def stop_seam(app: Flask | None = None) -> None:
    """Stop the bus of ``app`` in this process (it drains, up to ``bus.drain_timeout``).

    For gunicorn's ``worker_exit``; interpreter exit does it too. A later publish starts a new one.
    """
    get_state(app).process.reset()


def publish(*events: DomainEvent, context: str | None = None) -> None:
    """Write ``events`` to the outbox in ``db.session``'s open transaction, at once.

    ``context`` is the publishing context (checked: it must own every event); by default each
    event's owner. Raises OutsideSessionTransactionError, OwnershipError or EventTooLargeError
    with nothing written. Thread safe (each app context has its own Session).
    """
    if not events:
        return
    state = get_state()
    _publish_on(state, state.db.session, events, context)


@contextmanager
def transaction() -> Iterator[UnitOfWork]:
    """``db.session``'s transaction as a UnitOfWork: commit on exit, rollback on an exception.

    ``unit.session`` is the app context's Session and ``unit.publish`` publishes on it, so the
    use cases taking an ``engine.types.Transaction`` run unchanged in views. It commits (or rolls
    back) everything the app context did in ``db.session``, as ``db.session.commit()`` would.
    """
    state = get_state()
    session = state.db.session()

    def publish_on(target: Session, /, *events: DomainEvent, context: str | None = None) -> None:
        _publish_on(state, target, events, context)

    try:
        yield UnitOfWork(session, publish_on)
    except BaseException:
        session.rollback()
        raise
    session.commit()


def _publish_on(
    state: FlaskState,
    target: Session | scoped_session[Any],
    events: Sequence[DomainEvent],
    context: str | None,
) -> None:
    """Refuse without an open transaction, start this process's bus, then ``EventSeam.publish``."""
    session = target() if isinstance(target, scoped_session) else target
    if not session.in_transaction():
        raise OutsideSessionTransactionError()
    seam = state.running()
    # Flask-SQLAlchemy's scoped_session holds its Session subclass: same contract.
    seam.publish(cast("scoped_session[Session] | Session", target), *events, context=context)
