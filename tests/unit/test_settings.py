"""Settings: EVENTSEAM_ environment variables, ``__`` nesting, the TOML file and precedence."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest
from pydantic import ValidationError

from engine.modes import Mode
from engine.settings import CONFIG_FILE_ENV, EventSeamSettings, load_settings, unknown_env_vars

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Run each test without inherited EVENTSEAM_* variables, in a directory without eventseam.toml."""
    for name in list(os.environ):
        if name.upper().startswith("EVENTSEAM_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def write_toml(tmp_path: Path, text: str, name: str = "settings.toml") -> Path:
    """Write a TOML config file and return its path."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_any_source() -> None:
    """With no variable and no file, the embedded SQLite default and local modes apply."""
    settings = load_settings()
    assert settings.database_url == "sqlite:///eventseam.db"
    assert settings.mode_of("orders") is Mode.LOCAL
    assert settings.kafka.bootstrap_servers is None


def test_env_prefix_sets_top_level_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    """EVENTSEAM_DATABASE_URL and EVENTSEAM_MAX_EVENT_BYTES set the matching fields."""
    monkeypatch.setenv("EVENTSEAM_DATABASE_URL", "postgresql+psycopg://app@db/shop")
    monkeypatch.setenv("EVENTSEAM_MAX_EVENT_BYTES", "4096")
    settings = load_settings()
    assert settings.database_url == "postgresql+psycopg://app@db/shop"
    assert settings.max_event_bytes == 4096


def test_variables_without_the_prefix_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bare DATABASE_URL does not leak into eventseam's settings."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://elsewhere/db")
    assert load_settings().database_url == "sqlite:///eventseam.db"


def test_double_underscore_nests_into_kafka(monkeypatch: pytest.MonkeyPatch) -> None:
    """EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS and __SASL_PASSWORD reach the kafka section."""
    monkeypatch.setenv("EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS", "broker-1:9092,broker-2:9092")
    monkeypatch.setenv("EVENTSEAM_KAFKA__SASL_PASSWORD", "hunter2")
    kafka = load_settings().kafka
    assert kafka.bootstrap_servers == "broker-1:9092,broker-2:9092"
    assert kafka.sasl_password is not None
    assert kafka.sasl_password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(kafka)


def test_double_underscore_sets_a_context_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """EVENTSEAM_CONTEXTS__ORDERS=dual puts the orders context in dual mode, others stay local."""
    monkeypatch.setenv("EVENTSEAM_CONTEXTS__ORDERS", "dual")
    monkeypatch.setenv("EVENTSEAM_CONTEXTS__SHIPPING", "broker")
    settings = load_settings()
    assert settings.mode_of("orders") is Mode.DUAL
    assert settings.mode_of("shipping") is Mode.BROKER
    assert settings.mode_of("payments") is Mode.LOCAL


def test_toml_file_named_by_eventseam_config_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """EVENTSEAM_CONFIG_FILE points at a TOML file whose tables fill nested sections."""
    path = write_toml(
        tmp_path,
        'database_url = "sqlite:///from-file.db"\n'
        '[contexts]\npayments = "dual"\n'
        "[relay]\nbatch_size = 50\n"
        "[topics.payments]\npartitions = 12\n",
    )
    monkeypatch.setenv(CONFIG_FILE_ENV, str(path))
    settings = load_settings()
    assert settings.database_url == "sqlite:///from-file.db"
    assert settings.mode_of("payments") is Mode.DUAL
    assert settings.relay.batch_size == 50
    assert settings.topic_settings("payments").partitions == 12


def test_eventseam_toml_in_the_working_directory_is_read(tmp_path: Path) -> None:
    """Without EVENTSEAM_CONFIG_FILE, ./eventseam.toml is read when it exists."""
    write_toml(tmp_path, "[bus]\nmax_attempts = 7\n", name="eventseam.toml")
    assert load_settings().bus.max_attempts == 7


def test_precedence_init_over_env_over_file_over_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Init values beat variables, variables beat the TOML file, the file beats defaults."""
    path = write_toml(
        tmp_path, 'database_url = "sqlite:///file.db"\n[bus]\nmax_attempts = 5\nbuffer_size = 99\n'
    )
    monkeypatch.setenv(CONFIG_FILE_ENV, str(path))
    monkeypatch.setenv("EVENTSEAM_DATABASE_URL", "sqlite:///env.db")
    monkeypatch.setenv("EVENTSEAM_BUS__MAX_ATTEMPTS", "6")
    assert load_settings().database_url == "sqlite:///env.db"
    assert load_settings().bus.max_attempts == 6
    assert load_settings().bus.buffer_size == 99
    assert load_settings().bus.drain_timeout == 30.0
    assert load_settings(database_url="sqlite:///init.db").database_url == "sqlite:///init.db"


def test_invalid_mode_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mode other than local, dual or broker fails validation, naming the context."""
    monkeypatch.setenv("EVENTSEAM_CONTEXTS__ORDERS", "kafka")
    with pytest.raises(ValidationError, match=r"contexts\.orders"):
        load_settings()


def test_invalid_number_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    """A value outside a field's bounds fails validation instead of being clamped."""
    monkeypatch.setenv("EVENTSEAM_RELAY__BATCH_SIZE", "0")
    with pytest.raises(ValidationError, match=r"relay\.batch_size"):
        load_settings()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("nonsense", "not a SQLAlchemy URL"),
        ("mysql+pymysql://shop:s3cr3t-pw@db/shop", "runs on PostgreSQL or SQLite, not mysql"),
    ],
)
def test_database_url_must_name_postgresql_or_sqlite(
    url: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database_url that does not parse or names another backend fails validation, hiding it."""
    monkeypatch.setenv("EVENTSEAM_DATABASE_URL", url)
    with pytest.raises(ValidationError, match=r"database_url") as raised:
        load_settings()
    assert reason in str(raised.value)
    assert "s3cr3t-pw" not in str(raised.value)


@pytest.mark.parametrize(
    "url",
    ["sqlite://", "sqlite+aiosqlite:///x.db", "postgresql://h/db", "postgresql+asyncpg://h/db"],
)
def test_database_url_takes_every_driver_of_the_supported_backends(url: str) -> None:
    """Any driver of PostgreSQL or SQLite passes."""
    assert EventSeamSettings(database_url=url).database_url == url


def test_settings_are_frozen() -> None:
    """Settings are read once: assigning a field raises."""
    settings = load_settings()
    with pytest.raises(ValidationError):
        settings.database_url = "sqlite:///other.db"  # type: ignore[misc]


def test_unknown_env_vars_lists_only_unread_eventseam_variables() -> None:
    """Typos and unknown sections are reported; known, nested and dict-keyed names are not."""
    environ = {
        "EVENTSEAM_DATABASE_URL": "sqlite://",
        "EVENTSEAM_KAFKA__ACKS": "all",
        "EVENTSEAM_CONTEXTS__ORDERS": "dual",
        "EVENTSEAM_TOPICS__ORDERS__PARTITIONS": "3",
        CONFIG_FILE_ENV: "x.toml",
        "EVENTSEAM_DATABASE_ULR": "typo",
        "EVENTSEAM_KAFKA__BOOTSTRAP": "typo",
        "eventseam_relay__nope": "typo",
        "PATH": "/usr/bin",
    }
    assert unknown_env_vars(environ) == [
        "EVENTSEAM_DATABASE_ULR",
        "EVENTSEAM_KAFKA__BOOTSTRAP",
        "eventseam_relay__nope",
    ]


def test_unknown_env_vars_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an argument, the process environment is inspected."""
    monkeypatch.setenv("EVENTSEAM_NOT_A_SETTING", "1")
    assert unknown_env_vars() == ["EVENTSEAM_NOT_A_SETTING"]


def test_settings_model_is_the_one_load_settings_returns() -> None:
    """load_settings returns the frozen EventSeamSettings model."""
    assert isinstance(load_settings(), EventSeamSettings)
