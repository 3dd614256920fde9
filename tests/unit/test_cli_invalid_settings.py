"""Commands that load the application stop with one message when the settings do not validate."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.contexts import BoundedContext
from engine.seam import EventSeam
from engine.settings import load_settings

orders = BoundedContext("orders")

COMMANDS = {
    "status": ["status"],
    "flags show": ["flags", "show"],
    "contexts": ["contexts"],
    "worker": ["worker", "--context", "orders"],
    "replay": ["replay", "--context", "orders", "--since", "1h"],
    "parity": ["parity", "--context", "orders"],
    "dlq list": ["dlq", "list"],
}


def build_app() -> EventSeam:
    """The application factory: it reads the settings, as applications do."""
    return EventSeam(load_settings(), [orders])


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_invalid_settings_stop_the_command_with_the_validation_message(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit status 1 or 2 with the field and what is wrong, not a traceback."""
    monkeypatch.setenv("EVENTSEAM_CONTEXTS__ORDERS", "kafka")
    result = CliRunner().invoke(main, ["--app", f"{__name__}:build_app", *COMMANDS[command]])
    output = " ".join(result.output.split())
    assert result.exit_code in (1, 2), (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    assert f"cannot load the application '{__name__}:build_app'" in output
    assert "contexts.orders" in output
    assert "Input should be 'local', 'dual' or 'broker'" in output
