"""Fixtures of tests/flask: a Flask app with Flask-SQLAlchemy and eventseam on a fresh database.

``make_app`` builds the app the way an app factory does (``db.init_app`` then
``FlaskEventSeam.init_app``) on a fresh SQLite file or PostgreSQL database (``database_url``
runs a test once per database), with the shop's tables and eventseam's tables (the shipped
Alembic history) created. Every app's bus is stopped and its engines disposed after the test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask

from engine.integrations.flask import FlaskEventSeam, stop_seam
from outbox.migrate import upgrade
from tests.flask.shop import CONTEXTS, RECEIVED, db

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from engine.seam import EventSeam


def new_app(url: str, *, contexts: Any = CONTEXTS, **config: Any) -> Flask:
    """A Flask app on ``url`` with eventseam (``contexts`` given to the extension); schema created."""
    app = Flask("flaskshop")
    app.config.update(SQLALCHEMY_DATABASE_URI=url, EVENTSEAM_BUS={"max_attempts": 2}, **config)
    if url.startswith("sqlite"):
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"connect_args": {"timeout": 30}}
    db.init_app(app)
    FlaskEventSeam(app, db, contexts=contexts)
    with app.app_context():
        db.create_all()
        upgrade(db.engine)
    return app


def dispose(app: Flask) -> None:
    """Stop the app's bus in this process and close its database connections."""
    stop_seam(app)
    with app.app_context():
        for engine in db.engines.values():
            engine.dispose()


@pytest.fixture
def make_app(database_url: str) -> Iterator[Callable[..., Flask]]:
    """Build apps on this test's fresh database (SQLite, then PostgreSQL); disposed afterwards."""
    apps: list[Flask] = []

    def make(**config: Any) -> Flask:
        app = new_app(database_url, **config)
        apps.append(app)
        return app

    yield make
    for app in apps:
        dispose(app)


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    """The test app with the shop's contexts, all in local mode."""
    return make_app()


@pytest.fixture(autouse=True)
def _nothing_received() -> Iterator[None]:
    """Each test starts and ends with nothing received."""
    RECEIVED.clear()
    yield
    RECEIVED.clear()


def drain(seam: EventSeam) -> None:
    """Wait until every event handed to the running bus was handled, follow-ups included."""
    if seam.running:
        seam.bridge.call(seam.join)
