"""FlagSource in memory: precedence, staleness under an injected clock, validation and reporting."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast

import pytest
from rich.console import Console
from structlog.testing import capture_logs

import engine.flags as flags_module
from engine.cli.flags import flags_table
from engine.contexts import BoundedContext, ContextMap
from engine.errors import SettingsError, UnknownContextError
from engine.flags import FlagOrigin, FlagSource, RawFlag, parse_mode
from engine.modes import Mode
from engine.settings import EventSeamSettings

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy import Connection

CONTEXTS = ("orders", "payments", "shipping")
#: FlagSource.refresh hands this to read_flags, which the tests replace: it is never used.
NO_CONNECTION = cast("Connection", object())
WHEN = datetime(2030, 1, 1, tzinfo=UTC)


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeTable:
    """Stands in for read_flags: returns ``rows`` and counts reads."""

    def __init__(self, *rows: RawFlag) -> None:
        self.rows = list(rows)
        self.reads = 0
        self.during_read: Callable[[], None] | None = None

    def __call__(self, target: object) -> list[RawFlag]:
        self.reads += 1
        rows = list(self.rows)
        if self.during_read is not None:
            hook, self.during_read = self.during_read, None
            hook()
        return rows


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> FakeTable:
    """An in-memory flag table that FlagSource.refresh reads instead of the database."""
    fake = FakeTable()
    monkeypatch.setattr(flags_module, "read_flags", fake)
    return fake


def _source(clock: FakeClock | None = None, **modes: Mode) -> FlagSource:
    settings = EventSeamSettings(contexts=modes, flag_refresh_seconds=2.0)
    return FlagSource(settings, CONTEXTS, clock=clock or FakeClock())


def test_parse_mode_accepts_modes_and_names_case_insensitively() -> None:
    """Mode values and their names in any case parse; anything else is a SettingsError."""
    assert parse_mode(Mode.DUAL) is Mode.DUAL
    assert parse_mode(" Broker ") is Mode.BROKER
    with pytest.raises(SettingsError, match="expected one of: local, dual, broker"):
        parse_mode("shadow")


def test_settings_naming_an_unknown_context_are_rejected() -> None:
    """A settings mode for a context the application does not declare fails at construction."""
    settings = EventSeamSettings(contexts={"billing": Mode.DUAL})
    with pytest.raises(SettingsError, match="billing"):
        FlagSource(settings, CONTEXTS)


def test_before_any_refresh_settings_and_defaults_apply() -> None:
    """Without a table read, settings beat the LOCAL default and the snapshot is stale."""
    source = _source(payments=Mode.DUAL)
    assert [source.mode_of(c) for c in CONTEXTS] == [Mode.LOCAL, Mode.DUAL, Mode.LOCAL]
    assert [s.origin for s in source.states()] == [
        FlagOrigin.DEFAULT,
        FlagOrigin.SETTINGS,
        FlagOrigin.DEFAULT,
    ]
    assert source.stale
    assert source.mode_of("undeclared") is Mode.LOCAL


def test_context_map_supplies_the_declared_contexts() -> None:
    """A ContextMap is accepted as the list of declared contexts."""
    contexts = ContextMap(BoundedContext(name) for name in CONTEXTS)
    source = FlagSource(EventSeamSettings(), contexts)
    assert source.contexts == CONTEXTS


def test_table_wins_and_refresh_waits_for_the_interval(table: FakeTable) -> None:
    """The table beats settings, and refresh reads it at most once per interval unless forced."""
    clock = FakeClock()
    source = _source(clock, orders=Mode.DUAL)
    table.rows = [("orders", "broker", WHEN, "ops")]
    assert source.refresh(NO_CONNECTION)
    assert source.mode_of("orders") is Mode.BROKER
    table.rows = [("orders", "local", WHEN, "ops")]
    clock.now = 1.99
    assert not source.refresh(NO_CONNECTION)
    assert source.mode_of("orders") is Mode.BROKER
    assert source.refresh(NO_CONNECTION, force=True)
    assert source.mode_of("orders") is Mode.LOCAL
    clock.now = 3.99
    assert source.refresh(NO_CONNECTION)
    assert table.reads == 3


def test_removed_row_falls_back_to_settings(table: FakeTable) -> None:
    """When the table row disappears the settings mode applies again."""
    source = _source(payments=Mode.DUAL)
    table.rows = [("payments", "broker", WHEN, "ops")]
    source.refresh(NO_CONNECTION)
    table.rows = []
    source.refresh(NO_CONNECTION, force=True)
    assert source.mode_of("payments") is Mode.DUAL
    assert source.states()[1].origin is FlagOrigin.SETTINGS


def test_bad_rows_are_reported_once_and_ignored(table: FakeTable) -> None:
    """Rows naming an unknown mode or context are warned about once and never crash a reader."""
    source = _source(orders=Mode.DUAL)
    table.rows = [("orders", "sideways", WHEN, "sql"), ("billing", "dual", WHEN, "sql")]
    with capture_logs() as logs:
        source.refresh(NO_CONNECTION)
        source.refresh(NO_CONNECTION, force=True)
    assert sorted((log["event"], log["context"]) for log in logs) == [
        ("eventseam.flags.unknown_context", "billing"),
        ("eventseam.flags.unknown_mode", "orders"),
    ]
    assert source.mode_of("orders") is Mode.DUAL
    assert source.mode_of("billing") is Mode.LOCAL
    assert [(s.context, s.known) for s in source.states()][-1] == ("billing", False)


def test_flips_after_the_first_read_are_logged(table: FakeTable) -> None:
    """The first read sets a baseline; a later change of effective mode is logged."""
    source = _source()
    table.rows = [("shipping", "dual", WHEN, "ops")]
    with capture_logs() as logs:
        source.refresh(NO_CONNECTION)
        table.rows = [("shipping", "broker", WHEN, "ops")]
        source.refresh(NO_CONNECTION, force=True)
    changes = [log for log in logs if log["event"] == "flags.changed"]
    assert [(c["context"], c["before"], c["mode"]) for c in changes] == [
        ("shipping", "dual", "broker")
    ]


def test_an_older_read_never_replaces_a_newer_one(table: FakeTable) -> None:
    """A read that started earlier but finished later is discarded."""
    clock = FakeClock()
    source = _source(clock)
    table.rows = [("orders", "dual", WHEN, "ops")]

    def newer_read_meanwhile() -> None:
        clock.now = 5.0
        table.rows = [("orders", "broker", WHEN, "ops")]
        source.refresh(NO_CONNECTION, force=True)

    table.during_read = newer_read_meanwhile
    source.refresh(NO_CONNECTION)
    assert source.mode_of("orders") is Mode.BROKER


def test_writes_are_validated_before_touching_the_database() -> None:
    """set_mode and clear_mode raise typed errors for unknown contexts or modes without a query."""
    source = _source()
    with pytest.raises(UnknownContextError, match="billing"):
        source.set_mode(NO_CONNECTION, "billing", Mode.DUAL, by="test")
    with pytest.raises(SettingsError, match="sideways"):
        source.set_mode(NO_CONNECTION, "orders", "sideways", by="test")
    with pytest.raises(UnknownContextError):
        source.clear_mode(NO_CONNECTION, "billing")
    assert source.validate("orders", "DUAL") is Mode.DUAL


@pytest.mark.anyio
async def test_run_without_an_engine_is_a_settings_error() -> None:
    """The refresher task needs an engine to read through."""
    with pytest.raises(SettingsError, match="engine"):
        await _source().run()


def test_flags_table_marks_ignored_rows(table: FakeTable) -> None:
    """The CLI table shows each origin and flags rows of unknown contexts as ignored."""
    source = _source(payments=Mode.DUAL)
    table.rows = [("shipping", "broker", WHEN, "carol"), ("billing", "dual", WHEN, "sql")]
    source.refresh(NO_CONNECTION)
    console = Console(record=True, width=120)
    console.print(flags_table(source.states()))
    text = console.export_text()
    assert "default" in text
    assert "settings" in text
    assert "2030-01-01 00:00:00" in text
    assert "unknown context, ignored" in text
