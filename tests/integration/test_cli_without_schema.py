"""Operator commands on a database without eventseam's tables say so in one line, with the fix."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from engine.cli import main
from engine.contexts import BoundedContext
from engine.errors import SCHEMA_HINT
from engine.seam import EventSeam
from engine.settings import load_settings

hall = BoundedContext("hall")

#: Commands that read or write eventseam's tables, and a word of what their error names.
COMMANDS = {
    "status": ["status"],
    "flags show": ["flags", "show"],
    "outbox parked": ["outbox", "parked"],
    "dlq list": ["dlq", "list", "--no-kafka"],
    "inbox purge": ["inbox", "purge"],
    "erase": ["erase", "--subject", "customer-1"],
}


def build_app() -> EventSeam:
    """An application on EVENTSEAM_DATABASE_URL that creates no table."""
    settings = load_settings()
    engine = create_engine(settings.database_url)
    return EventSeam(settings, [hall], session_factory=sessionmaker(engine))


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_names_the_missing_schema_and_the_fix(
    command: str, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 1, one message naming `eventseam db upgrade`, no SQL statement dumped."""
    monkeypatch.setenv("EVENTSEAM_DATABASE_URL", database_url)
    monkeypatch.delenv("EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    result = CliRunner().invoke(main, ["--app", f"{__name__}:build_app", *COMMANDS[command]])
    output = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == 1, result.output
    assert SCHEMA_HINT in output
    assert "[SQL:" not in output
