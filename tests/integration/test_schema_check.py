"""``eventseam relay`` and ``eventseam worker`` check the database's eventseam schema revision at start-up."""

from __future__ import annotations

import os
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.orm import sessionmaker
from structlog.testing import capture_logs

from engine.cli import main
from engine.cli import relay as relay_module
from engine.cli import worker as worker_module
from engine.contexts import BoundedContext
from engine.events import DomainEvent
from engine.modes import Mode
from engine.seam import EventSeam
from engine.settings import EventSeamSettings, KafkaSettings
from outbox import migrate
from outbox.migrate import SchemaState

OLD_REVISION = "0008"
URL_VARIABLE = "EVENTSEAM_TEST_SCHEMA_CHECK_URL"


class GuestArrived(DomainEvent, name="integration.schema.GuestArrived", version=1):
    """An event the hall context owns."""


hall = BoundedContext("hall", owns=[GuestArrived], subscribes=[GuestArrived])


@hall.handler(GuestArrived, name="greet_on_guest_arrived")
def greet_on_guest_arrived(event: GuestArrived) -> None:
    """Does nothing."""


def worker_app() -> EventSeam:
    """A broker-mode EventSeam bound to the database named by URL_VARIABLE."""
    settings = EventSeamSettings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"), contexts={"hall": Mode.BROKER}
    )
    engine = create_engine(os.environ[URL_VARIABLE])
    return EventSeam(settings, [hall], session_factory=sessionmaker(engine))


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace what relay/worker run after their checks; the list records which one started."""
    calls: list[str] = []

    async def serve(runner: object, health: object = None) -> None:
        calls.append("worker")

    monkeypatch.setattr(relay_module, "configure_logging", lambda level, *, json_logs: None)
    monkeypatch.setattr(worker_module, "configure_logging", lambda level, *, json_logs: None)
    monkeypatch.setattr(
        relay_module, "_run", lambda settings, sampled, probes: calls.append("relay")
    )
    monkeypatch.setattr("engine.runner.ConsumerRunner", lambda seam, contexts: object())
    monkeypatch.setattr(worker_module, "tune_for_worker", lambda: None)
    monkeypatch.setattr(worker_module, "serve", serve)
    return calls


def with_password(url: str) -> str:
    """``url`` with a password (trust auth ignores it), to check messages hide it."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return url
    return parsed.set(password="s3cr3t-pw").render_as_string(hide_password=False)


def run_command(command: str, url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run ``eventseam relay`` or ``eventseam worker --context hall`` against ``url``."""
    monkeypatch.setenv("EVENTSEAM_DATABASE_URL", url)
    monkeypatch.setenv("EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv(URL_VARIABLE, url)
    args = ["relay"] if command == "relay" else ["--app", f"{__name__}:worker_app", "worker"]
    if command == "worker":
        args += ["--context", "hall"]
    return CliRunner().invoke(main, args)


def test_upgraded_database_is_current(database_url: str) -> None:
    """A database upgraded to head is CURRENT."""
    migrate.upgrade(database_url)
    status = migrate.check_schema(database_url)
    assert status.state is SchemaState.CURRENT
    assert status.current == status.expected == migrate.head()


@pytest.mark.parametrize("command", ["relay", "worker"])
def test_old_revision_exits_2_before_starting(
    command: str, database_url: str, started: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A schema at an older revision stops the command with exit 2, naming both revisions."""
    migrate.upgrade(database_url, OLD_REVISION)
    url = with_password(database_url)
    result = run_command(command, url, monkeypatch)
    assert result.exit_code == 2, result.output
    assert f"at revision {OLD_REVISION}" in result.output
    assert f"expects revision {migrate.head()}" in result.output
    assert "eventseam db upgrade" in result.output
    assert "s3cr3t-pw" not in result.output
    assert started == []


@pytest.mark.parametrize("command", ["relay", "worker"])
def test_upgraded_database_starts(
    command: str, database_url: str, started: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A schema at head starts the command without a schema warning."""
    migrate.upgrade(database_url)
    with capture_logs() as logs:
        result = run_command(command, database_url, monkeypatch)
    assert result.exit_code == 0, result.output
    assert started == [command]
    assert not [entry for entry in logs if str(entry["event"]).startswith("eventseam_schema")]


@pytest.mark.parametrize("command", ["relay", "worker"])
def test_create_all_tables_warn_and_start(
    command: str, sqlite_url: str, started: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tables made with create_all (no version table) log schema.unversioned and start."""
    engine = create_engine(sqlite_url)
    migrate.schema_metadata().create_all(engine)
    engine.dispose()
    with capture_logs() as logs:
        result = run_command(command, sqlite_url, monkeypatch)
    assert result.exit_code == 0, result.output
    assert started == [command]
    assert [entry["event"] for entry in logs] == ["schema.unversioned"]


def test_newer_revision_warns_and_goes_on(database_url: str) -> None:
    """A revision this code does not know (newer code migrated it) is AHEAD: a warning only."""
    migrate.upgrade(database_url)
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = 'f00d'"))
    engine.dispose()
    with capture_logs() as logs:
        status = migrate.require_schema(database_url)
    assert (status.state, status.current) == (SchemaState.AHEAD, "f00d")
    assert [entry["event"] for entry in logs] == ["schema.ahead"]


def test_unreachable_database_is_skipped() -> None:
    """A database that refuses connections is UNREACHABLE: a warning, no error."""
    with capture_logs() as logs:
        status = migrate.require_schema("postgresql+asyncpg://user:pw@127.0.0.1:1/none")
    assert status.state is SchemaState.UNREACHABLE
    assert status.error
    assert [entry["event"] for entry in logs] == ["schema.check_skipped"]
    assert "pw@" not in status.database


@pytest.mark.parametrize("command", ["relay", "worker"])
def test_database_without_eventseam_tables_exits_2_naming_the_fix(
    command: str, database_url: str, started: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No eventseam tables at all (migrations never ran) stops the command with exit 2."""
    url = with_password(database_url)
    result = run_command(command, url, monkeypatch)
    assert result.exit_code == 2, result.output
    assert "table eventseam_outbox does not exist" in result.output
    assert "eventseam db upgrade" in result.output
    assert "s3cr3t-pw" not in result.output
    assert started == []
    assert migrate.check_schema(database_url).state is SchemaState.MISSING
