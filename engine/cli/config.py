"""``eventseam config check``: show the effective settings and where each value comes from.

Secrets are masked (``SecretStr`` fields, passwords in URLs). Unknown ``EVENTSEAM_*`` variables,
which pydantic-settings would otherwise ignore silently, are reported as warnings. Exit status:
0 when the settings validate (warnings included), 2 when they do not.
"""

from __future__ import annotations

import os
import tomllib
from typing import TYPE_CHECKING, Any, NoReturn

import click
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from engine.security import unused_sasl_settings
from engine.settings import (
    CONFIG_FILE_ENV,
    DEFAULT_CONFIG_FILE,
    ENV_PREFIX,
    EventSeamSettings,
    config_file,
    load_settings,
    unknown_env_vars,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path

INVALID_SETTINGS_EXIT = 2
_SECRET_WORDS = ("password", "secret", "token")
_MASK = "**********"


@click.group()
def config() -> None:
    """Inspect eventseam's settings."""


@config.command("check")
def check() -> None:
    """Print the effective settings (secrets masked); warn about unknown EVENTSEAM_* variables."""
    console = Console(highlight=False)
    path = config_file()
    try:
        settings = load_settings()
        file_values = _read_toml(path)
    except (ValidationError, tomllib.TOMLDecodeError, OSError) as exc:
        _fail(console, path, exc)
    console.print(f"[bold]Config file:[/] {_describe_file(path)}")
    console.print(settings_table(settings, os.environ, file_values))
    warnings = [
        *_file_warnings(path),
        *_env_warnings(unknown_env_vars()),
        *(
            f"{name} is set but kafka.sasl_mechanism is not: it is not used"
            for name in unused_sasl_settings(settings.kafka)
        ),
    ]
    for warning in warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(
        "[green]Settings are valid.[/]" + (f" ({len(warnings)} warning(s))" if warnings else "")
    )


def settings_table(
    settings: EventSeamSettings, environ: Mapping[str, str], file_values: Mapping[str, Any]
) -> Table:
    """A rich table of every setting: dotted name, masked value and source (env, file, default)."""
    env_names = {name.upper() for name in environ}
    file_keys = set(flatten(file_values))
    table = Table(title="Effective eventseam settings", title_justify="left")
    for column in ("setting", "value", "source"):
        table.add_column(column)
    for key, value in flatten(settings.model_dump(mode="json")).items():
        table.add_row(key, mask(key, value), _source(key, env_names, file_keys))
    return table


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"kafka": {"acks": "all"}}`` -> ``{"kafka.acks": "all"}``; an empty dict stays a leaf."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def mask(key: str, value: Any) -> str:
    """Display form of a setting's value: secrets hidden, URL passwords hidden, None as ``-``."""
    if value is None:
        return "-"
    if any(word in key.lower() for word in _SECRET_WORDS):
        return _MASK
    if key.endswith("url") and isinstance(value, str):
        try:
            return make_url(value).render_as_string(hide_password=True)
        except ArgumentError:
            return value
    return str(value)


def masked_input(key: str, value: Any) -> str:
    """An invalid input for display: secrets masked, nested sections (a whole ``kafka``) too."""
    if isinstance(value, dict):
        items = ", ".join(f"{k!r}: {masked_input(f'{key}.{k}', v)}" for k, v in value.items())
        return "{" + items + "}"
    if value is None or any(word in key.lower() for word in _SECRET_WORDS):
        return mask(key, value)
    return repr(value)


def _source(key: str, env_names: set[str], file_keys: set[str]) -> str:
    """Where ``key`` was set: ``env`` (EVENTSEAM_A__B), ``file`` (the TOML) or ``default``."""
    env_name = ENV_PREFIX + key.replace(".", "__").upper()
    parents = _parent_names(env_name)
    if env_name in env_names or any(parent in env_names for parent in parents):
        return "env"
    if key in file_keys or any(key.startswith(k + ".") for k in file_keys):
        return "file"
    return "default"


def _parent_names(env_name: str) -> Iterator[str]:
    """``EVENTSEAM_KAFKA__ACKS`` -> ``EVENTSEAM_KAFKA`` (a JSON value for the whole section)."""
    parts = env_name.split("__")
    for end in range(1, len(parts)):
        yield "__".join(parts[:end])


def _read_toml(path: Path | None) -> dict[str, Any]:
    if path is None or not path.is_file():
        return {}
    with path.open("rb") as handle:
        return tomllib.load(handle)


def _describe_file(path: Path | None) -> str:
    if path is None:
        return f"none ({DEFAULT_CONFIG_FILE} not found, {CONFIG_FILE_ENV} not set)"
    return str(path) if path.is_file() else f"{path} (missing)"


def _file_warnings(path: Path | None) -> Iterator[str]:
    if path is not None and not path.is_file():
        yield f"{CONFIG_FILE_ENV} names {path}, which does not exist: its settings are not applied"


def _env_warnings(names: list[str]) -> Iterator[str]:
    for name in names:
        yield f"{name} is set but no setting reads it (typo? nested names use '__')"


def _fail(console: Console, path: Path | None, exc: Exception) -> NoReturn:
    console.print("[bold red]Invalid eventseam settings[/]")
    if isinstance(exc, ValidationError):
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            shown = masked_input(where, error.get("input"))
            console.print(f"  {where}: {error['msg']} (got {shown})")
    else:
        console.print(f"  cannot read config file {path}: {exc}")
    console.print(f"Fix the {ENV_PREFIX}* variables or the config file, then run again.")
    raise click.exceptions.Exit(INVALID_SETTINGS_EXIT)
