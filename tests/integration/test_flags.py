"""Routing flags on real SQLite and PostgreSQL: precedence, runtime flips, validation and the CLI."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING

import anyio
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, insert, select
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from structlog.testing import capture_logs

from engine.cli import COMMANDS, main
from engine.cli.flags import flags as flags_command
from engine.contexts import BoundedContext, ContextMap
from engine.errors import SettingsError, UnknownContextError
from engine.flags import FlagOrigin, FlagSource
from engine.modes import Mode
from engine.settings import EventSeamSettings
from outbox.errors import SchemaMissingError
from outbox.flag_table import flags
from tests.conftest import async_url

if TYPE_CHECKING:
    from collections.abc import Iterator

CONTEXTS = ("orders", "payments", "shipping")
APP_PATH = "tests.integration.test_flags:build_app"


def build_app() -> SimpleNamespace:
    """The application the CLI loads via --app: three contexts, payments set to dual in settings."""
    contexts = ContextMap(BoundedContext(name) for name in CONTEXTS)
    return SimpleNamespace(contexts=contexts, settings=_settings(payments=Mode.DUAL))


def _settings(**modes: Mode) -> EventSeamSettings:
    return EventSeamSettings(contexts=modes, flag_refresh_seconds=2.0)


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(database_url: str) -> Iterator[Engine]:
    """An engine on a fresh database holding the flag table."""
    engine = create_engine(database_url)
    flags.metadata.create_all(engine, tables=[flags])
    yield engine
    engine.dispose()


def _source(clock: FakeClock | None = None, **modes: Mode) -> FlagSource:
    return FlagSource(_settings(**modes), CONTEXTS, clock=clock or FakeClock())


def test_precedence_default_settings_table(db: Engine) -> None:
    """The table beats settings, which beat the LOCAL default."""
    source = _source(payments=Mode.DUAL, shipping=Mode.DUAL)
    with db.begin() as connection:
        source.set_mode(connection, "shipping", Mode.BROKER, by="test")
    with db.connect() as connection:
        assert source.refresh(connection)
    assert [source.mode_of(c) for c in CONTEXTS] == [Mode.LOCAL, Mode.DUAL, Mode.BROKER]
    origins = {state.context: state.origin for state in source.states()}
    assert origins == {
        "orders": FlagOrigin.DEFAULT,
        "payments": FlagOrigin.SETTINGS,
        "shipping": FlagOrigin.TABLE,
    }


def test_flip_is_seen_within_one_refresh(db: Engine) -> None:
    """A committed flip reaches another process's snapshot at its first refresh after the interval."""
    clock = FakeClock()
    web = _source(clock)
    operator = _source()
    with db.connect() as connection:
        assert web.refresh(connection)
    with db.begin() as connection:
        operator.set_mode(connection, "orders", "dual", by="alice")
    clock.now = 1.9
    with db.connect() as connection:
        assert not web.refresh(connection)
    assert web.mode_of("orders") is Mode.LOCAL
    clock.now = 2.0
    with db.connect() as connection:
        assert web.refresh(connection)
    assert web.mode_of("orders") is Mode.DUAL


def test_set_mode_upserts(db: Engine) -> None:
    """A second set_mode updates the row: mode, author and timestamp."""
    source = _source()
    with Session(db) as session, session.begin():
        source.set_mode(session, "orders", Mode.DUAL, by="alice")
    with db.begin() as connection:
        assert source.set_mode(connection, "orders", "BROKER", by="bob") is Mode.BROKER
    with db.connect() as connection:
        rows = connection.execute(select(flags)).all()
        source.refresh(connection)
    assert [(row.context, row.mode, row.updated_by) for row in rows] == [
        ("orders", "broker", "bob")
    ]
    state = source.states()[0]
    assert state.updated_by == "bob"
    assert state.updated_at is not None
    assert state.updated_at.tzinfo is not None


def test_set_mode_rejects_unknown_context_and_mode(db: Engine) -> None:
    """An undeclared context raises UnknownContextError, an unknown mode SettingsError; nothing is written."""
    source = _source()
    with db.begin() as connection:
        with pytest.raises(UnknownContextError, match="billing"):
            source.set_mode(connection, "billing", Mode.DUAL, by="test")
        with pytest.raises(SettingsError, match="sideways"):
            source.set_mode(connection, "orders", "sideways", by="test")
        assert connection.execute(select(flags)).first() is None


def test_clear_mode_falls_back_to_settings(db: Engine) -> None:
    """Clearing a table row hands the context back to its settings mode."""
    source = _source(payments=Mode.DUAL)
    with db.begin() as connection:
        source.set_mode(connection, "payments", Mode.BROKER, by="test")
        source.refresh(connection)
        assert source.mode_of("payments") is Mode.BROKER
        assert source.clear_mode(connection, "payments")
        assert not source.clear_mode(connection, "payments")
        source.refresh(connection)
    assert source.mode_of("payments") is Mode.DUAL


def test_unknown_context_in_table_is_reported_not_fatal(db: Engine) -> None:
    """A row for an undeclared context is logged once, ignored by mode_of and listed as unknown."""
    with db.begin() as connection:
        connection.execute(
            insert(flags).values(
                context="billing", mode="broker", updated_by="sql", updated_at=datetime.now(UTC)
            )
        )
    source = _source()
    with capture_logs() as logs, db.connect() as connection:
        source.refresh(connection)
        source.refresh(connection, force=True)
    warnings = [log for log in logs if log["event"] == "eventseam.flags.unknown_context"]
    assert [w["context"] for w in warnings] == ["billing"]
    assert source.mode_of("billing") is Mode.LOCAL
    orphan = source.states()[-1]
    assert (orphan.context, orphan.known, orphan.mode) == ("billing", False, Mode.BROKER)


@pytest.mark.anyio
async def test_refresh_async_on_an_async_session(database_url: str) -> None:
    """An async publisher refreshes lazily on its AsyncSession at the start of a transaction."""
    setup = create_engine(database_url)
    flags.metadata.create_all(setup, tables=[flags])
    engine = create_async_engine(async_url(database_url))
    clock = FakeClock()
    source = FlagSource(_settings(), CONTEXTS, clock=clock)
    try:
        async with AsyncSession(engine) as session, session.begin():
            assert await source.refresh_async(session)
            assert not await source.refresh_async(session)
        with setup.begin() as connection:
            _source().set_mode(connection, "payments", Mode.BROKER, by="test")
        clock.now = 2.0
        async with AsyncSession(engine) as session, session.begin():
            assert await source.refresh_async(session)
        assert source.mode_of("payments") is Mode.BROKER
    finally:
        await engine.dispose()
        setup.dispose()


@pytest.mark.anyio
async def test_run_refreshes_through_an_async_engine(database_url: str) -> None:
    """The refresher task reads the table before it reports started, then once per interval."""
    setup = create_engine(database_url)
    flags.metadata.create_all(setup, tables=[flags])
    engine = create_async_engine(async_url(database_url))
    ticks_in, ticks_out = anyio.create_memory_object_stream[None]()
    waits_in, waits_out = anyio.create_memory_object_stream[float]()

    async def sleep(seconds: float) -> None:
        await waits_in.send(seconds)
        await ticks_out.receive()

    source = FlagSource(_settings(), CONTEXTS, engine=engine, sleep=sleep)
    try:
        with setup.begin() as connection:
            source.set_mode(connection, "orders", Mode.DUAL, by="test")
        async with anyio.create_task_group() as tg:
            await tg.start(source.run)
            assert source.mode_of("orders") is Mode.DUAL
            assert await waits_out.receive() == 2.0
            with setup.begin() as connection:
                source.set_mode(connection, "orders", Mode.BROKER, by="test")
            await ticks_in.send(None)
            await waits_out.receive()  # the loop sleeps again: the refresh is done
            assert source.mode_of("orders") is Mode.BROKER
            tg.cancel_scope.cancel()
    finally:
        for stream in (ticks_in, ticks_out, waits_in, waits_out):
            stream.close()
        await engine.dispose()
        setup.dispose()


@pytest.mark.anyio
async def test_run_with_a_sync_engine_survives_a_failed_refresh(sqlite_url: str) -> None:
    """With a sync engine the refresher reads in a thread; a failing read is logged and the snapshot kept."""
    engine = create_engine(sqlite_url)
    flags.metadata.create_all(engine, tables=[flags])
    ticks_in, ticks_out = anyio.create_memory_object_stream[None]()
    waits_in, waits_out = anyio.create_memory_object_stream[float]()

    async def sleep(seconds: float) -> None:
        await waits_in.send(seconds)
        await ticks_out.receive()

    source = FlagSource(_settings(), CONTEXTS, engine=engine, sleep=sleep)
    try:
        with engine.begin() as connection:
            source.set_mode(connection, "shipping", Mode.DUAL, by="test")
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                await tg.start(source.run)
                await waits_out.receive()
                flags.drop(engine)
                await ticks_in.send(None)
                await waits_out.receive()
                tg.cancel_scope.cancel()
        assert source.mode_of("shipping") is Mode.DUAL
        assert any(log["event"] == "flags.refresh_failed" for log in logs)
    finally:
        for stream in (ticks_in, ticks_out, waits_in, waits_out):
            stream.close()
        engine.dispose()


@pytest.mark.anyio
@pytest.mark.parametrize("engine_kind", ["sync", "async"])
async def test_run_fails_to_start_without_the_table(database_url: str, engine_kind: str) -> None:
    """A missing flag table fails the refresher's start, with an error that says how to create it."""
    engine: Engine | AsyncEngine = (
        create_engine(database_url)
        if engine_kind == "sync"
        else create_async_engine(async_url(database_url))
    )
    source = FlagSource(_settings(), CONTEXTS, engine=engine)
    try:
        async with anyio.create_task_group() as tg:
            with pytest.raises(SchemaMissingError) as raised:
                await tg.start(source.run)
    finally:
        if isinstance(engine, Engine):
            engine.dispose()
        else:
            await engine.dispose()
    assert raised.value.table == "eventseam_flags"
    assert raised.value.database == engine.url.render_as_string(hide_password=True)
    assert "`eventseam db upgrade`" in str(raised.value)
    assert isinstance(raised.value.__cause__, (OperationalError, ProgrammingError))


@pytest.mark.anyio
async def test_run_start_failure_with_the_table_present_is_the_database_error(
    sqlite_url: str,
) -> None:
    """A start that fails for another reason than a missing table raises the database's error."""
    engine = create_engine(sqlite_url)
    flags.metadata.create_all(engine, tables=[flags])
    with engine.begin() as connection:  # a column the read needs is gone
        connection.exec_driver_sql("ALTER TABLE eventseam_flags DROP COLUMN updated_by")
    source = FlagSource(_settings(), CONTEXTS, engine=engine)
    try:
        async with anyio.create_task_group() as tg:
            with pytest.raises(OperationalError, match="updated_by"):
                await tg.start(source.run)
    finally:
        engine.dispose()


# --- CLI ---------------------------------------------------------------------------------------


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(flags_command, list(args), obj={"app_path": APP_PATH})
    return result.exit_code, result.output


def test_cli_show_lists_modes_and_sources(db: Engine) -> None:
    """`flags show` lists every context with its effective mode and source."""
    url = db.url.render_as_string(hide_password=False)
    with db.begin() as connection:
        _source().set_mode(connection, "shipping", Mode.BROKER, by="carol")
    code, output = _invoke("show", "--database-url", url)
    assert code == 0, output
    rows = {cells[0]: cells[1:] for cells in _table_rows(output)}
    assert rows["orders"][:2] == ["local", "default"]
    assert rows["payments"][:2] == ["dual", "settings"]
    assert rows["shipping"][:2] == ["broker", "table"]
    assert rows["shipping"][3] == "carol"


def _table_rows(output: str) -> list[list[str]]:
    """The body rows of a rich table, as stripped cells."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in output.splitlines()
        if line.strip().startswith("│")
    ]


def test_cli_set_flips_a_context(db: Engine) -> None:
    """`flags set` writes the row that a FlagSource then reads."""
    url = db.url.render_as_string(hide_password=False)
    code, output = _invoke("set", "orders", "dual", "--by", "dave", "--database-url", url)
    assert code == 0, output
    assert "local -> dual" in output
    source = _source()
    with db.connect() as connection:
        source.refresh(connection)
    assert source.mode_of("orders") is Mode.DUAL
    assert source.states()[0].updated_by == "dave"


def test_cli_rejects_unknown_context_and_mode(db: Engine) -> None:
    """An unknown context or mode exits with status 2 and a clear message, writing nothing."""
    url = db.url.render_as_string(hide_password=False)
    code, output = _invoke("set", "billing", "dual", "--database-url", url)
    assert code == 2
    assert "unknown context 'billing'" in output
    code, output = _invoke("set", "orders", "sideways", "--database-url", url)
    assert code == 2
    assert "unknown mode 'sideways'" in output
    with db.connect() as connection:
        assert connection.execute(select(flags)).first() is None


def test_cli_clear_removes_the_row(db: Engine) -> None:
    """`flags clear` deletes the table row so settings decide again."""
    url = db.url.render_as_string(hide_password=False)
    assert _invoke("set", "payments", "broker", "--database-url", url)[0] == 0
    code, output = _invoke("clear", "payments", "--database-url", url)
    assert code == 0, output
    assert "removed" in output
    with db.connect() as connection:
        assert connection.execute(select(flags)).first() is None


def test_cli_contexts_option_replaces_the_app(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--contexts validates against the listed names when no application is loaded."""
    monkeypatch.setenv("EVENTSEAM_DATABASE_URL", sqlite_url)
    engine = create_engine(sqlite_url)
    flags.metadata.create_all(engine, tables=[flags])
    engine.dispose()
    runner = CliRunner()
    result = runner.invoke(
        flags_command, ["set", "billing", "dual", "--contexts", "billing,orders"], obj={}
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        flags_command, ["set", "payments", "dual", "--contexts", "billing,orders"], obj={}
    )
    assert result.exit_code == 2
    assert "unknown context 'payments'" in result.output


def test_cli_reports_an_unloadable_app_and_a_missing_table(sqlite_url: str) -> None:
    """An app that cannot be imported exits 2; a database without the flag table exits 1."""
    result = CliRunner().invoke(flags_command, ["show"], obj={"app_path": "no_such_module:build"})
    assert result.exit_code == 2
    assert "cannot load the application" in result.output
    code, output = _invoke("show", "--database-url", sqlite_url)
    assert code == 1
    assert "eventseam_flags" in output


def test_cli_through_the_eventseam_group(db: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Registered in the `eventseam` group, `flags` reads the application from --app."""
    monkeypatch.setitem(COMMANDS, "flags", "engine.cli.flags:flags")
    url = db.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(
        main, ["--app", APP_PATH, "flags", "set", "shipping", "dual", "--database-url", url]
    )
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["--app", APP_PATH, "flags", "show", "--database-url", url])
    assert result.exit_code == 0, result.output
    assert "shipping" in result.output
