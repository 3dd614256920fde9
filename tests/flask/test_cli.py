"""``flask eventseam ...``: the eventseam CLI's commands on the app's settings, contexts and database."""

from __future__ import annotations

import json
import socket
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import func, select

from engine.integrations.flask import get_state, transaction
from outbox.flag_table import flags as flag_table
from outbox.inbox_table import inbox
from tests.flask.shop import Order, OrderPlaced, db

if TYPE_CHECKING:
    from collections.abc import Callable

    from flask import Flask
    from flask.testing import FlaskCliRunner


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    """Flask's CLI runner for the test app."""
    return app.test_cli_runner()


def flag_rows(app: Flask) -> list[tuple[str, str, str | None]]:
    """(context, mode, updated_by) of the flag table, by context."""
    with app.app_context():
        query = select(flag_table.c.context, flag_table.c.mode, flag_table.c.updated_by)
        return [tuple(row) for row in db.session.execute(query.order_by(flag_table.c.context))]


def test_db_current_uses_the_apps_database(app: Flask, runner: FlaskCliRunner) -> None:
    """`flask eventseam db current` reads the schema of Flask-SQLAlchemy's database."""
    result = runner.invoke(args=["eventseam", "db", "current"])
    assert result.exit_code == 0, result.output
    assert "(head)" in result.output
    url = get_state(app).engine.url
    assert (url.database or "") in result.output


def test_flags_set_show_clear_on_the_apps_contexts(app: Flask, runner: FlaskCliRunner) -> None:
    """`flask eventseam flags` flips a mode in the app's database and lists the app's contexts."""
    result = runner.invoke(args=["eventseam", "flags", "set", "orders", "dual", "--by", "tester"])
    assert result.exit_code == 0, result.output
    assert "orders: local -> dual" in result.output
    assert flag_rows(app) == [("orders", "dual", "tester")]
    shown = runner.invoke(args=["eventseam", "flags", "show"])
    assert shown.exit_code == 0, shown.output
    assert all(name in shown.output for name in ("orders", "billing", "audit"))
    assert runner.invoke(args=["eventseam", "flags", "clear", "orders"]).exit_code == 0
    assert flag_rows(app) == []


def test_flags_refuse_an_unknown_context(app: Flask, runner: FlaskCliRunner) -> None:
    """An unknown context exits with status 2, as `eventseam flags` does."""
    result = runner.invoke(args=["eventseam", "flags", "set", "nope", "dual"])
    assert result.exit_code == 2
    assert "unknown context 'nope'" in result.output
    assert flag_rows(app) == []


def test_config_check_shows_where_each_setting_comes_from(
    app: Flask, runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`config check` lists the contexts, the sources (app.config, Flask-SQLAlchemy) and unknown variables."""
    monkeypatch.setenv("EVENTSEAM_KAFKA_BOOTSTRAP", "typo")
    result = runner.invoke(args=["eventseam", "config", "check"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Bounded contexts: orders, billing, audit" in result.output
    lines = result.output.splitlines()
    assert any("bus.max_attempts" in line and "app.config" in line for line in lines)
    assert any("database_url" in line and "Flask-SQLAlchemy" in line for line in lines)
    assert "W001 environment variable EVENTSEAM_KAFKA_BOOTSTRAP" in result.output
    assert "Settings are valid." in result.output


def test_relay_without_brokers_says_how_to_configure_them(runner: FlaskCliRunner) -> None:
    """`flask eventseam relay` without bootstrap servers exits 1 naming the app.config key."""
    result = runner.invoke(args=["eventseam", "relay"])
    assert result.exit_code == 1
    assert "EVENTSEAM_KAFKA" in result.output


@pytest.mark.parametrize(
    ("server", "refusal"),
    [("metrics", "cannot serve metrics"), ("health", "cannot serve health probes")],
)
def test_relay_serves_metrics_and_probes(runner: FlaskCliRunner, server: str, refusal: str) -> None:
    """`flask eventseam relay --metrics-port / --health-port` serve before relaying: a port already taken exits 1 saying so."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        options = ["--bundled-broker", f"--{server}-port", port, f"--{server}-addr", "127.0.0.1"]
        result = runner.invoke(args=["eventseam", "relay", *options])
    assert result.exit_code == 1, result.output
    assert refusal in result.output


def test_worker_refuses_an_unknown_context(runner: FlaskCliRunner) -> None:
    """`flask eventseam worker` loads the app's contexts and refuses one it does not declare."""
    result = runner.invoke(args=["eventseam", "worker", "--context", "nope"])
    assert result.exit_code == 2
    assert "nope" in result.output


def test_group_lists_the_commands(runner: FlaskCliRunner) -> None:
    """`flask eventseam --help` lists every command, the operator's included."""
    result = runner.invoke(args=["eventseam", "--help"])
    assert result.exit_code == 0
    listed = {line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line}
    assert listed == {
        "acl",
        "check",
        "config",
        "contexts",
        "contracts",
        "db",
        "dlq",
        "erase",
        "flags",
        "inbox",
        "keys",
        "outbox",
        "parity",
        "relay",
        "replay",
        "status",
        "worker",
    }


def test_status_counts_the_apps_outbox_backlog(make_app: Callable[..., Flask]) -> None:
    """`flask eventseam status` reads the app's contexts and settings and Flask-SQLAlchemy's
    database: the event published in broker mode waits there for the relay."""
    app = make_app(EVENTSEAM_CONTEXTS={"orders": "broker"})
    with app.app_context(), transaction() as tx:
        tx.session.add(Order(id="S1"))
        tx.publish(OrderPlaced(aggregate_id="S1", order_id="S1"))
    result = app.test_cli_runner().invoke(args=["eventseam", "status", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    backlog = {row["name"]: (row["mode"], row["backlog"]) for row in report["contexts"]}
    assert backlog == {
        "orders": ("broker", 1),
        "billing": ("local", 0),
        "audit": ("local", 0),
    }


def test_dlq_and_replay_run_on_the_app(runner: FlaskCliRunner) -> None:
    """`flask eventseam dlq` and `replay` load the app's EventSeam: nothing dead, nothing to replay."""
    letters = runner.invoke(args=["eventseam", "dlq", "list", "--no-kafka"])
    assert letters.exit_code == 0, letters.output
    assert "no dead letters" in letters.output
    dry_run = ["replay", "--context", "audit", "--since", "1h", "--dry-run", "--json"]
    replayed = runner.invoke(args=["eventseam", *dry_run])
    assert replayed.exit_code == 0, replayed.output
    assert json.loads(replayed.output)["context"] == "audit"


def test_inbox_purge_uses_the_apps_retention_and_database(make_app: Callable[..., Flask]) -> None:
    """`flask eventseam inbox purge` keeps rows within app.config's retention window (an hour
    here, a week by default) and deletes the older one, in Flask-SQLAlchemy's database."""
    app = make_app(EVENTSEAM_INBOX={"retention_seconds": 3600})
    now = datetime.now(UTC)
    with app.app_context():
        db.session.execute(
            inbox.insert(),
            [
                {"handler": "audit.h", "event_id": uuid.uuid4(), "processed_at": now - age}
                for age in (timedelta(hours=2), timedelta(minutes=5))
            ],
        )
        db.session.commit()
    result = app.test_cli_runner().invoke(args=["eventseam", "inbox", "purge"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("1 inbox rows processed")
    with app.app_context():
        assert db.session.execute(select(func.count()).select_from(inbox)).scalar_one() == 1


def test_erase_and_keys_use_the_apps_database(runner: FlaskCliRunner) -> None:
    """`flask eventseam erase` and `keys show` open the app's key table."""
    erased = runner.invoke(args=["eventseam", "erase", "--subject", "c-1"])
    assert erased.exit_code == 0, erased.output
    assert "erased 'c-1': no live key" in erased.output
    shown = runner.invoke(args=["eventseam", "keys", "show", "--subject", "c-1"])
    assert shown.exit_code == 0, shown.output
    assert "'c-1': no keys" in shown.output
