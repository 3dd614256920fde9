"""``eventseam replay`` on SQLite and PostgreSQL: counts match known numbers, the inbox keeps it safe.

The application is tests.integration.replay_app (every context ``local``: the outbox keeps a
``local`` row per event). Events are applied on the bus first; the tests then make handlers
"forget" some events (inbox and effect rows deleted) and check that a replay applies exactly
those, and nothing on a second run.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import structlog

from tests.integration.replay_app import (
    COUNT,
    FAILING,
    LABEL,
    NOTE,
    applications,
    build_seam,
    counted,
    engine_of,
    forget,
    invoke,
    publish,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy import Engine

    from tests.integration.replay_app import StockCounted


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Quiet engine logs; undone afterwards (the CLI configures structlog for its process)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    yield
    structlog.reset_defaults()


@pytest.fixture
def world(database_url: str) -> Iterator[tuple[Engine, dict[str, str], list[StockCounted]]]:
    """10 StockCounted applied by every handler (and 3 that occurred 3 hours ago); CLI env."""
    seam = build_seam(database_url)
    engine = engine_of(seam)
    hours_ago = datetime.now(UTC) - timedelta(hours=3)
    old = [counted(100 + n, at=hours_ago) for n in range(3)]
    recent = [counted(n) for n in range(10)]
    publish(seam, [*old, *recent])
    assert applications(engine) == {LABEL: 13, COUNT: 13, NOTE: 13}
    yield engine, {"REPLAY_TEST_DATABASE": database_url}, recent
    engine.dispose()


def replay_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    """``eventseam replay --json ARGS``, which must exit 0."""
    result = invoke(["replay", "--json", *args], env)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def counts(delivered: int, already: int, failed: int = 0) -> dict[str, int]:
    """One handler's expected counts."""
    return {"delivered": delivered, "already_applied": already, "failed": failed}


def test_replay_applies_only_what_handlers_forgot_and_nothing_twice(
    world: tuple[Engine, dict[str, str], list[StockCounted]],
) -> None:
    """4 forgotten events are delivered again (their follow-ups reach audit); a second run delivers 0."""
    engine, env, recent = world
    forget(engine, LABEL, recent[:4])
    first = replay_json(env, "--context", "shelves", "--since", "2h")
    assert first["events"] == 10  # the 3 older ones are left out
    assert first["sources"] == {"outbox": 10}
    assert first["handlers"] == {LABEL: counts(4, 6), COUNT: counts(0, 10)}
    # label_shelf applied 4 more times; its ShelfLabeled follow-ups reached audit's handler
    assert applications(engine) == {LABEL: 13, COUNT: 13, NOTE: 17}
    second = replay_json(env, "--context", "shelves", "--since", "2h")
    assert second["handlers"] == {LABEL: counts(0, 10), COUNT: counts(0, 10)}
    assert applications(engine) == {LABEL: 13, COUNT: 13, NOTE: 17}


def test_iso_time_handler_filter_and_dry_run(
    world: tuple[Engine, dict[str, str], list[StockCounted]],
) -> None:
    """An ISO 8601 --since takes the older events in; --handler keeps one handler; --dry-run applies nothing."""
    engine, env, recent = world
    forget(engine, COUNT, recent[:2])
    since = (datetime.now(UTC) - timedelta(hours=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    dry = replay_json(
        env, "--context", "shelves", "--since", since, "--handler", COUNT, "--dry-run"
    )
    assert dry["dry_run"] is True
    assert dry["events"] == 13
    assert dry["handlers"] == {COUNT: counts(2, 11)}
    assert applications(engine)[COUNT] == 11
    done = replay_json(env, "--context", "shelves", "--since", since, "--handler", COUNT)
    assert done["handlers"] == {COUNT: counts(2, 11)}
    assert applications(engine)[COUNT] == 13


def test_a_failing_handler_is_counted_and_exits_1(database_url: str) -> None:
    """A handler that still fails is counted as failed (exit 1); once fixed, the replay delivers it."""
    seam = build_seam(database_url)
    engine = engine_of(seam)
    env = {"REPLAY_TEST_DATABASE": database_url}
    FAILING["on"] = True
    try:
        publish(seam, [counted(1), counted(2, fail=True), counted(3)])
        assert applications(engine) == {LABEL: 2, COUNT: 3, NOTE: 2}
        result = invoke(["replay", "--context", "shelves", "--since", "1h"], env)
        assert result.exit_code == 1, result.output
        assert "failed" in result.output
        assert "ShelfJammedError: shelf 2 is jammed" in result.output
        FAILING["on"] = False
        fixed = replay_json(env, "--context", "shelves", "--since", "1h")
        assert fixed["handlers"][LABEL] == counts(1, 2)
        assert applications(engine) == {LABEL: 3, COUNT: 3, NOTE: 3}
    finally:
        FAILING["on"] = True
        engine.dispose()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--context", "shelves", "--since", "yesterday"], "neither an ISO 8601 time"),
        (["--context", "nowhere", "--since", "1h"], "unknown context 'nowhere'"),
        (["--context", "warehouse", "--since", "1h"], "declares no handlers"),
        (["--context", "shelves", "--since", "1h", "--handler", "shelves.nope"], "unknown handler"),
        (
            ["--context", "shelves", "--since", "1h", "--handler", NOTE],
            "belongs to context 'audit'",
        ),
    ],
)
def test_bad_input_exits_2_with_a_clear_error(
    sqlite_url: str, args: list[str], message: str
) -> None:
    """A time that does not parse, an unknown context or handler: exit 2 and a message naming it."""
    engine_of(build_seam(sqlite_url)).dispose()  # the tables
    result = invoke(["replay", *args], {"REPLAY_TEST_DATABASE": sqlite_url})
    assert result.exit_code == 2
    assert message in result.output


def test_a_window_older_than_the_inbox_window_warns(
    world: tuple[Engine, dict[str, str], list[StockCounted]],
) -> None:
    """--since past inbox.retention_seconds warns on stderr (purged rows can apply twice); inside it, no warning."""
    env = {**world[1], "EVENTSEAM_INBOX__RETENTION_SECONDS": "3600"}
    past = invoke(["replay", "--json", "--context", "shelves", "--since", "2h"], env)
    assert past.exit_code == 0, past.output
    assert "older than the inbox window (inbox.retention_seconds = 3600" in past.stderr
    assert json.loads(past.stdout)["events"] == 10
    inside = invoke(["replay", "--json", "--context", "shelves", "--since", "30m"], env)
    assert inside.exit_code == 0, inside.output
    assert "inbox window" not in inside.stderr
