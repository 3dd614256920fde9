"""``eventseam config check``: effective settings with secrets masked, warnings, exit codes."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner, Result

from engine.cli import main
from engine.cli.config import INVALID_SETTINGS_EXIT

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Run each test without inherited EVENTSEAM_* variables, in a directory without eventseam.toml."""
    for name in list(os.environ):
        if name.upper().startswith("EVENTSEAM_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def config_check(**env: str) -> Result:
    """Run ``eventseam config check`` with ``env`` added to the environment (wide output)."""
    return CliRunner().invoke(main, ["config", "check"], env={"COLUMNS": "200", **env})


def test_prints_effective_settings_and_exits_0() -> None:
    """With defaults only, every setting is listed with its source and the exit status is 0."""
    result = config_check()
    assert result.exit_code == 0, result.output
    assert "sqlite:///eventseam.db" in result.output
    assert "relay.batch_size" in result.output
    assert "Settings are valid." in result.output
    assert "warning" not in result.output


def test_secrets_are_masked() -> None:
    """A SASL password and the password inside the database URL never appear in the output."""
    result = config_check(
        EVENTSEAM_KAFKA__SASL_PASSWORD="hunter2",
        EVENTSEAM_DATABASE_URL="postgresql+psycopg://app:s3cret@db:5432/shop",
    )
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    assert "s3cret" not in result.output
    assert "**********" in result.output
    assert "postgresql+psycopg://app:***@db:5432/shop" in result.output


def test_environment_values_are_marked_env() -> None:
    """A value set through EVENTSEAM_CONTEXTS__ORDERS shows as coming from the environment."""
    result = config_check(EVENTSEAM_CONTEXTS__ORDERS="dual")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if "contexts.orders" in line)
    assert "dual" in line
    assert "env" in line


def test_file_values_are_marked_file(tmp_path: Path) -> None:
    """A value from the TOML file named by EVENTSEAM_CONFIG_FILE shows as coming from the file."""
    path = tmp_path / "eventseam-settings.toml"
    path.write_text("[relay]\nbatch_size = 42\n", encoding="utf-8")
    result = config_check(EVENTSEAM_CONFIG_FILE=str(path))
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if "relay.batch_size" in line)
    assert "42" in line
    assert "file" in line


def test_unknown_variables_are_warned_about_but_exit_0() -> None:
    """An EVENTSEAM_* variable no setting reads is named in a warning; the check still passes."""
    result = config_check(
        EVENTSEAM_KAFKA__BOOTSTRAP="broker:9092", EVENTSEAM_APP="app.bootstrap:bootstrap"
    )
    assert result.exit_code == 0, result.output
    assert "EVENTSEAM_KAFKA__BOOTSTRAP" in result.output
    assert "EVENTSEAM_APP" not in result.output
    assert "1 warning" in result.output


def test_missing_config_file_is_warned_about(tmp_path: Path) -> None:
    """EVENTSEAM_CONFIG_FILE naming a file that does not exist produces a warning."""
    result = config_check(EVENTSEAM_CONFIG_FILE=str(tmp_path / "nope.toml"))
    assert result.exit_code == 0, result.output
    assert "does not exist" in result.output


def test_invalid_settings_exit_2_with_a_clear_message() -> None:
    """An invalid mode fails with exit status 2, naming the setting and the bad value."""
    result = config_check(EVENTSEAM_CONTEXTS__ORDERS="kafka")
    assert result.exit_code == INVALID_SETTINGS_EXIT == 2
    assert "Invalid eventseam settings" in result.output
    assert "contexts.orders" in result.output
    assert "'kafka'" in result.output


def test_unreadable_config_file_exits_2(tmp_path: Path) -> None:
    """A config file that is not valid TOML fails with exit status 2."""
    path = tmp_path / "broken.toml"
    path.write_text("database_url = [", encoding="utf-8")
    result = config_check(EVENTSEAM_CONFIG_FILE=str(path))
    assert result.exit_code == 2
    assert "cannot read config file" in result.output
