"""``eventseam relay``: the shared relay runner's bundled-broker settings and refusal message."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.cli.relay import with_bundled_broker
from engine.settings import EventSeamSettings

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Run each test without inherited EVENTSEAM_* variables, in a directory without eventseam.toml."""
    for name in list(os.environ):
        if name.upper().startswith("EVENTSEAM_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_bundled_broker_turns_automatic_idempotence_off() -> None:
    """The bundled broker's settings point at it and turn idempotence ``auto`` off."""
    settings = with_bundled_broker(EventSeamSettings(), "127.0.0.1:9092")
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.kafka.enable_idempotence == "off"


def test_bundled_broker_keeps_explicit_idempotence() -> None:
    """An explicit ``enable_idempotence="on"`` is kept for the bundled broker."""
    base = EventSeamSettings()
    kafka = base.kafka.model_copy(update={"enable_idempotence": "on"})
    settings = with_bundled_broker(base.model_copy(update={"kafka": kafka}), "127.0.0.1:9092")
    assert settings.kafka.enable_idempotence == "on"


def test_relay_refuses_to_start_without_servers() -> None:
    """Without bootstrap servers or --bundled-broker the command exits 1 and says how to set them."""
    result = CliRunner().invoke(main, ["relay"])
    assert result.exit_code == 1
    assert "set EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS" in result.output
    assert "--bundled-broker" in result.output
