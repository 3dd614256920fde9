"""The bus's dead letters in the database and ``eventseam dlq`` on them (SQLite and PostgreSQL).

An EventSeam with a database persists its bus's dead letters (engine.dead_letter_db), so the
``dlq`` commands of another process list, show, replay and discard them.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import structlog

from engine.dead_letter_db import SqlDeadLetterStore, list_stored
from engine.dead_letters import DeadLetter
from engine.errors import UnknownDeadLetterError
from engine.modes import Mode
from engine.settings import BusSettings
from outbox.table import metadata
from tests.integration.replay_app import (
    COUNT,
    FAILING,
    LABEL,
    NOTE,
    applications,
    build_seam,
    counted,
    engine_of,
    invoke,
    publish,
)
from tests.personal_data_world import EMAIL, REJECT, crm_seam, customer
from tests.personal_data_world import engine_of as pd_engine_of

if TYPE_CHECKING:
    from collections.abc import Iterator

    from engine.seam import EventSeam


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    """Quiet engine logs; FAILING on; both undone afterwards (the CLI configures structlog)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    FAILING["on"] = True
    yield
    FAILING["on"] = True
    structlog.reset_defaults()


@pytest.fixture
def failed(database_url: str) -> Iterator[tuple[EventSeam, dict[str, str]]]:
    """Shelves 1..4 counted; label_shelf failed on shelves 2 and 3 (two bus dead letters)."""
    seam = build_seam(database_url)
    publish(seam, [counted(1), counted(2, fail=True), counted(3, fail=True), counted(4)])
    yield seam, {"REPLAY_TEST_DATABASE": database_url}
    engine_of(seam).dispose()


def dlq_json(env: dict[str, str], *args: str) -> Any:
    """``eventseam dlq ARGS --json``, which must exit 0."""
    result = invoke(["dlq", *args, "--json"], env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_dead_letters_are_persisted_and_listed(
    failed: tuple[EventSeam, dict[str, str]],
) -> None:
    """The two failures are rows another process lists and shows, with the event and the error."""
    seam, env = failed
    assert isinstance(seam.bus.dead_letters, SqlDeadLetterStore)
    assert seam.bus.dead_letters.count(handler=LABEL) == 2
    letters = dlq_json(env, "list")
    assert [(x["kind"], x["handler"], x["payload"]["n"]) for x in letters] == [
        ("bus", LABEL, 2),
        ("bus", LABEL, 3),
    ]
    assert letters[0]["error_type"].endswith("ShelfJammedError")
    shown = dlq_json(env, "show", letters[1]["id"])
    assert shown["error_message"] == "shelf 3 is jammed"
    assert "ShelfJammedError" in shown["traceback"]
    text = invoke(["dlq"], env)  # `dlq` alone lists
    assert text.exit_code == 0
    assert letters[0]["id"] in text.stdout
    assert dlq_json(env, "list", "--handler", COUNT) == []


def test_replay_and_discard_resolve_letters(failed: tuple[EventSeam, dict[str, str]]) -> None:
    """A replay that fails keeps the letter (exit 1); fixed, it delivers and the letter goes; discard drops."""
    seam, env = failed
    engine = engine_of(seam)
    first, second = (x["id"] for x in dlq_json(env, "list"))
    still = invoke(["dlq", "replay", first], env)
    assert still.exit_code == 1
    assert f"{first}  {LABEL}  failed: ShelfJammedError: shelf 2 is jammed" in still.stdout
    assert len(dlq_json(env, "list")) == 2
    FAILING["on"] = False
    done = invoke(["dlq", "replay", first], env)
    assert done.exit_code == 0, done.output
    assert "replayed 1: delivered 1, already applied 0, failed 0" in done.stdout
    assert applications(engine) == {LABEL: 3, COUNT: 4, NOTE: 3}  # the follow-up reached audit
    dropped = invoke(["dlq", "discard", second], env)
    assert dropped.exit_code == 0, dropped.output
    assert f"{second} discarded ({LABEL}, tests.replay.StockCounted" in dropped.stdout
    assert dlq_json(env, "list") == []
    assert applications(engine)[LABEL] == 3


def test_replay_all_skips_what_was_applied_meanwhile(
    failed: tuple[EventSeam, dict[str, str]],
) -> None:
    """Events a replay applied meanwhile: ``dlq replay --all`` counts them already applied and resolves them."""
    seam, env = failed
    FAILING["on"] = False
    window = invoke(["replay", "--context", "shelves", "--since", "1h", "--handler", LABEL], env)
    assert window.exit_code == 0, window.output
    assert applications(engine_of(seam))[LABEL] == 4
    again = invoke(["dlq", "replay", "--all", "--handler", LABEL], env)
    assert again.exit_code == 0, again.output
    assert "replayed 2: delivered 0, already applied 2, failed 0" in again.stdout
    assert dlq_json(env, "list") == []
    assert applications(engine_of(seam))[LABEL] == 4


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["show", str(uuid.UUID(int=7))],
            1,
            "no dead letter with id 00000000-0000-0000-0000-000000000007",
        ),
        (["replay", str(uuid.UUID(int=7))], 1, "no dead letter with id"),
        (["discard", str(uuid.UUID(int=7))], 1, "no dead letter with id"),
        (["show", "not-an-id"], 2, "is not a dead-letter id"),
        (["replay"], 2, "give one or more IDs, or --all"),
        (["show", "eventseam.dlq.x:0:3"], 1, "not a dead-letter topic of this application"),
        (["list", "--handler", "shelves.nope"], 2, "unknown handler 'shelves.nope'"),
    ],
)
def test_bad_ids_exit_non_zero_with_a_clear_error(
    sqlite_url: str, args: list[str], code: int, message: str
) -> None:
    """Unknown ids exit 1, malformed ones (and a replay without ids) exit 2, each with a message."""
    engine_of(build_seam(sqlite_url)).dispose()  # the tables
    result = invoke(["dlq", *args], {"REPLAY_TEST_DATABASE": sqlite_url})
    assert result.exit_code == code, result.output
    assert message in result.output


def test_store_keeps_a_letter_in_memory_when_the_table_is_missing(sqlite_url: str) -> None:
    """Without the dead-letter table, add keeps the letter in memory (nothing dropped); it is listed once the table exists."""
    seam = build_seam(sqlite_url)
    engine = engine_of(seam)
    table = metadata.tables["eventseam_dead_letter"]
    try:
        with engine.begin() as connection:
            table.drop(connection)
        store = SqlDeadLetterStore(engine, seam.registry)
        event = counted(9).model_copy(update={"source": "warehouse"})
        letter = DeadLetter.from_error(LABEL, event, RuntimeError("boom"), 1)
        store.add(letter)  # logged as dead_letters.persist_failed, never raised
        with engine.begin() as connection:
            table.create(connection)
        assert store.list() == [letter]
        assert store.count(handler=LABEL) == 1
        assert store.remove(letter.id) == letter
        with pytest.raises(UnknownDeadLetterError):
            store.get(letter.id)
    finally:
        engine.dispose()


def test_personal_data_is_sealed_in_the_table_and_opened_for_the_bus(sqlite_url: str) -> None:
    """A dead letter's personal-data field is stored sealed (no plaintext in the row) and comes back opened."""
    seam = crm_seam(sqlite_url, mode=Mode.LOCAL, bus=BusSettings(max_attempts=1))
    engine = pd_engine_of(seam)
    REJECT["on"] = True
    try:
        publish(seam, [customer("cus-1")])
        with engine.connect() as connection:
            (row,) = list_stored(connection)
        assert row.handler == "mailing.reject_customer"
        assert EMAIL.encode() not in row.payload
        (letter,) = seam.bus.dead_letters.list()
        assert letter.event.email == EMAIL  # type: ignore[attr-defined]
    finally:
        REJECT["on"] = False
        engine.dispose()
