"""configure_logging: the standard logging module's records leave in the commands' own format."""

from __future__ import annotations

import io
import json
import logging
from typing import TYPE_CHECKING

import pytest
import structlog

from engine.cli.logging import configure_logging

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def stderr(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """The captured stderr (capsys); the root handlers ``bare_root`` removed are put back (the
    suite's ``_restore_logging`` removes configure_logging's own and resets structlog)."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    yield capsys
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)


def bare_root() -> None:
    """No root handler, as in a fresh command process (pytest adds its capture handlers)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)


def lines(stderr: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    """Every line written to stderr, each parsed as JSON (fails on a line that is not)."""
    return [json.loads(line) for line in stderr.readouterr().err.splitlines()]


def test_json_logs_render_library_records_as_json_lines(stderr: pytest.CaptureFixture[str]) -> None:
    """aiokafka's error becomes a JSON line with its logger and level; libraries' INFO is left out."""
    bare_root()
    configure_logging("info", json_logs=True)
    structlog.get_logger().info("relay.started", slots=4)
    logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")
    logging.getLogger("aiokafka").error("Unable connect to %r", "127.0.0.1:1")
    first, second = lines(stderr)
    assert (first["event"], first["level"], first["slots"]) == ("relay.started", "info", 4)
    assert second["event"] == "Unable connect to '127.0.0.1:1'"
    assert (second["level"], second["logger"]) == ("error", "aiokafka")
    assert "timestamp" in second


def test_debug_level_lets_every_library_record_through(stderr: pytest.CaptureFixture[str]) -> None:
    """At --log-level debug the libraries' INFO and DEBUG records are rendered too."""
    bare_root()
    configure_logging("debug", json_logs=True)
    logging.getLogger("aiokafka.consumer.group_coordinator").info("Joined group")
    [line] = lines(stderr)
    assert (line["event"], line["level"]) == ("Joined group", "info")


def test_a_second_call_replaces_its_own_handler(stderr: pytest.CaptureFixture[str]) -> None:
    """Configuring twice (a host embedding two commands) writes each record once."""
    bare_root()
    configure_logging("info", json_logs=True)
    configure_logging("warning", json_logs=False)
    logging.getLogger("aiokafka").warning("Heartbeat failed")
    [text] = stderr.readouterr().err.splitlines()
    assert "Heartbeat failed" in text
    assert "[aiokafka]" in text


def test_a_host_root_handler_is_left_alone(stderr: pytest.CaptureFixture[str]) -> None:
    """A process whose root logger already has a handler keeps its own logging set-up."""
    bare_root()
    host = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(host)
    configure_logging("info", json_logs=True)
    assert logging.getLogger().handlers == [host]
