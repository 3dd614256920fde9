"""app.config's EVENTSEAM_* keys: validated at init_app, every problem named with a hint."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from engine.integrations.flask import FlaskConfigError, FlaskEventSeam, get_seam, get_state
from engine.integrations.flask.config import diagnose
from engine.modes import Mode
from tests.flask.conftest import dispose, new_app
from tests.flask.shop import CONTEXTS, audit, billing

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(autouse=True)
def _no_eventseam_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read EVENTSEAM_* variables: start each test without any."""
    for name in list(os.environ):
        if name.upper().startswith("EVENTSEAM_"):
            monkeypatch.delenv(name)


@pytest.fixture
def url(sqlite_url: str) -> str:
    """A fresh SQLite file (these tests are about configuration, not the database)."""
    return sqlite_url


@pytest.fixture
def built(url: str) -> Iterator[list[Flask]]:
    """Apps built by a test, disposed afterwards."""
    apps: list[Flask] = []
    yield apps
    for app in apps:
        dispose(app)


def build(apps: list[Flask], url: str, **config: Any) -> Flask:
    """``new_app`` on ``url``, remembered for disposal."""
    app = new_app(url, **config)
    apps.append(app)
    return app


def problems_of(url: str, **config: Any) -> str:
    """The FlaskConfigError message init_app raises for ``config``."""
    with pytest.raises(FlaskConfigError) as caught:
        new_app(url, **config)
    return str(caught.value)


def test_config_values_win_and_nest_like_environment_variables(
    url: str, built: list[Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """EVENTSEAM_* keys override variables; ``__`` nests; database_url is Flask-SQLAlchemy's URL."""
    monkeypatch.setenv("EVENTSEAM_CONTEXTS__ORDERS", "broker")
    monkeypatch.setenv("EVENTSEAM_MAX_EVENT_BYTES", "4096")
    app = build(
        built,
        url,
        EVENTSEAM_CONTEXTS={"orders": "dual"},
        EVENTSEAM_KAFKA={"client_id": "shop"},
        EVENTSEAM_KAFKA__ACKS="1",
    )
    settings = get_state(app).config.settings
    assert settings.mode_of("orders") is Mode.DUAL
    assert settings.max_event_bytes == 4096
    assert (settings.kafka.client_id, settings.kafka.acks) == ("shop", "1")
    assert settings.database_url == url
    assert get_state(app).config.derived_url


def test_explicit_database_url_is_kept(url: str, built: list[Flask], tmp_path: Path) -> None:
    """EVENTSEAM_DATABASE_URL wins over Flask-SQLAlchemy's URL."""
    other = f"sqlite:///{tmp_path / 'other.db'}"
    app = build(built, url, EVENTSEAM_DATABASE_URL=other)
    assert get_state(app).config.settings.database_url == other
    assert not get_state(app).config.derived_url


def test_bounded_contexts_from_config(url: str, built: list[Flask]) -> None:
    """EVENTSEAM_BOUNDED_CONTEXTS names the contexts as 'module:attribute' strings."""
    names = ["tests.flask.shop:orders", "tests.flask.shop:billing", "tests.flask.shop.audit"]
    app = build(built, url, contexts=None, EVENTSEAM_BOUNDED_CONTEXTS=names)
    with app.app_context():
        assert get_seam().contexts.names() == ["orders", "billing", "audit"]


def test_unknown_keys_are_errors_with_suggestions(url: str) -> None:
    """Misspelled keys, top-level and nested, fail init_app with a suggestion each."""
    message = problems_of(url, EVENTSEAM_KAFAK={"acks": "1"}, EVENTSEAM_RELAY={"batch_sise": 5})
    assert "E002 app.config has an unknown key 'EVENTSEAM_KAFAK'" in message
    assert "did you mean 'EVENTSEAM_KAFKA'?" in message
    assert "app.config['EVENTSEAM_RELAY'] has an unknown key 'batch_sise'" in message
    assert "did you mean 'batch_size'?" in message


def test_misspelled_mode_and_unknown_context_are_errors(url: str) -> None:
    """A misspelled mode and a mode for an unknown context are named with the fix."""
    message = problems_of(url, EVENTSEAM_CONTEXTS={"orders": "duall"})
    assert "app.config['EVENTSEAM_CONTEXTS']['orders'] = 'duall' is not a routing mode" in message
    assert "did you mean 'dual'?" in message
    message = problems_of(url, EVENTSEAM_CONTEXTS={"order": "dual"})
    assert "E007" in message
    assert "did you mean 'orders'?" in message


def test_contexts_are_required_once(url: str) -> None:
    """No bounded contexts, unusable ones, or contexts given twice fail init_app (E003)."""
    assert "E003" in problems_of(url, contexts=None)
    unusable = problems_of(
        url, contexts=None, EVENTSEAM_BOUNDED_CONTEXTS=["tests.flask.shop:RECEIVED"]
    )
    assert "app.config['EVENTSEAM_BOUNDED_CONTEXTS'] entry 'tests.flask.shop:RECEIVED'" in unusable
    assert "is not usable" in unusable
    twice = problems_of(url, EVENTSEAM_BOUNDED_CONTEXTS=["tests.flask.shop:orders"])
    assert "given twice" in twice


def test_a_subscription_nobody_owns_is_a_warning(url: str) -> None:
    """Without orders (the owner of OrderPlaced), billing's and audit's handlers of it never run:
    W003 names each one; the app still starts."""
    found, problems = diagnose({}, contexts=[billing, audit], default_url=url)
    assert found is not None
    warnings = [str(problem) for problem in problems if problem.code == "W003"]
    assert warnings == [
        f"W003 handler {name!r} subscribes to flaskshop.OrderPlaced, which no context of "
        "app.config['EVENTSEAM_BOUNDED_CONTEXTS'] owns: it never runs (hint: add the context "
        "that owns flaskshop.OrderPlaced to app.config['EVENTSEAM_BOUNDED_CONTEXTS'], or drop "
        "the subscription)"
        for name in ("billing.issue_invoice_on_order_placed", "audit.record_on_shop_event")
    ]
    _, complete = diagnose({}, contexts=list(CONTEXTS), default_url=url)
    assert not [problem for problem in complete if problem.code == "W003"]


def test_flask_sqlalchemy_is_required() -> None:
    """Without Flask-SQLAlchemy on the app, init_app says to initialise it first."""
    app = Flask("no_db")
    with pytest.raises(FlaskConfigError, match=r"db\.init_app\(app\) first"):
        FlaskEventSeam(app, contexts=CONTEXTS)


def test_uninitialised_app_is_named(url: str) -> None:
    """get_state on an app without eventseam says how to initialise it."""
    app = Flask("plain")
    app.config["SQLALCHEMY_DATABASE_URI"] = url
    SQLAlchemy().init_app(app)
    with pytest.raises(FlaskConfigError, match="not initialised"):
        get_state(app)
