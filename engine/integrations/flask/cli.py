"""``flask eventseam ...``: the ``eventseam`` command line on this app's settings and contexts.

    flask eventseam config check          effective settings with their source, and warnings
    flask eventseam db upgrade            eventseam's tables in the app's database
    flask eventseam flags show|set|clear  routing modes at runtime (the app's contexts)
    flask eventseam relay                 outbox -> Kafka until SIGTERM/SIGINT
    flask eventseam worker --context X    run X's handlers from Kafka (a detached context)
    flask eventseam outbox parked ...     rows the relay gave up on
    flask eventseam status                each context's mode, backlog, dead letters, lag
    flask eventseam parity --context X    local path vs Kafka path of a dual context
    flask eventseam dlq ...               dead letters: list, show, replay, discard
    flask eventseam replay ...            retained events re-delivered to a context's handlers
    flask eventseam inbox purge           inbox rows past the retention window
    flask eventseam erase | keys ...      crypto-shred data subjects, personal-data keys
    flask eventseam contexts | contracts | acl | check
                                          module map, event contracts, Kafka ACLs, boundaries

``init_app`` adds the group to ``app.cli``. The commands are the ``eventseam`` CLI's own click
commands (imported when used); the group hands them this app: its EventSeam as the application
(``eventseam --app``), and its ``database_url`` (by default Flask-SQLAlchemy's URL) as the
default of their ``--url`` options. ``relay`` and ``config check`` are the Flask versions, on
the app's settings (``app.config`` included) instead of the environment alone.
"""

from __future__ import annotations

import importlib.util
import os
import tomllib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import click
from rich.console import Console
from rich.table import Table

from engine.cli import APP_SETTINGS, COMMANDS, LazyGroup
from engine.cli.config import flatten, mask
from engine.cli.options import relay_options
from engine.settings import config_file

from .config import PREFIX, diagnose, raw_options
from .extension import get_state

if TYPE_CHECKING:
    from collections.abc import Mapping

    from flask import Flask

    from engine.seam import EventSeam

__all__ = ["APP_PATH", "app_seam", "eventseam_cli"]

#: What the wrapped commands load as ``eventseam --app``: the current app's EventSeam.
APP_PATH: Final = "engine.integrations.flask.cli:app_seam"
#: The ``eventseam`` CLI's commands run as they are (imported when used): all but the two this
#: group has its own versions of (``relay``, ``config``), on the app's settings.
ENGINE_COMMANDS: Final[dict[str, str]] = {
    name: target
    for name, target in COMMANDS.items()
    if name not in {"relay", "config"}
    and importlib.util.find_spec(target.partition(":")[0]) is not None
}
INVALID_SETTINGS_EXIT: Final = 2


def app_seam() -> EventSeam:
    """The current app's EventSeam in this process (what ``eventseam --app`` would build)."""
    return get_state().seam


@click.group("eventseam", cls=LazyGroup, lazy=ENGINE_COMMANDS)
@click.pass_context
def eventseam_cli(ctx: click.Context) -> None:
    """eventseam on this app: outbox tables, routing flags, relay, workers, settings."""
    _app(ctx)
    ctx.obj = {"app_path": APP_PATH, APP_SETTINGS: True}


def _app(ctx: click.Context) -> Flask:
    """The app the command runs for, its application context pushed for the whole command."""
    from flask import current_app
    from flask.cli import ScriptInfo

    if current_app:
        found: Flask = current_app._get_current_object()  # type: ignore[attr-defined]  # LocalProxy
        return found
    app = ctx.ensure_object(ScriptInfo).load_app()
    ctx.with_resource(app.app_context())
    return app


@eventseam_cli.command("relay")
@relay_options
def relay(**options: Any) -> None:
    """Forward pending outbox rows to Kafka until SIGTERM or SIGINT (`eventseam relay`)."""
    from engine.cli.relay import run_relay  # on use: it imports the relay's dependencies

    run_relay(
        get_state().config.settings,
        missing_servers="set app.config['EVENTSEAM_KAFKA'] = {'bootstrap_servers': 'host:9092'} "
        "or EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS",
        **options,
    )


@eventseam_cli.group("config")
def config() -> None:
    """Inspect this app's eventseam settings."""


@config.command("check")
def check() -> None:
    """Print the effective settings, where each comes from, and every problem (exit 2 on errors)."""
    from flask import current_app

    state = get_state()
    console = Console(highlight=False)
    found, problems = diagnose(
        current_app.config,
        contexts=state.given_contexts,
        default_url=state.engine.url.render_as_string(hide_password=False),
    )
    for problem in problems:
        colour = "red" if problem.is_error else "yellow"
        kind = "error" if problem.is_error else "warning"
        console.print(f"[{colour}]{kind}:[/] {problem.code} {problem.message}", markup=True)
        if problem.hint:
            console.print(f"    hint: {problem.hint}", markup=False)
    if found is None:
        console.print("[bold red]Invalid eventseam settings[/]")
        raise click.exceptions.Exit(INVALID_SETTINGS_EXIT)
    names = ", ".join(context.name for context in found.contexts)
    console.print(f"[bold]Bounded contexts:[/] {names}")
    derived = {"database_url"} if found.derived_url else set()
    values = found.settings.model_dump(mode="json")
    console.print(_settings_table(values, current_app.config, derived))
    warnings = len(problems)
    console.print(
        "[green]Settings are valid.[/]" + (f" ({warnings} warning(s))" if warnings else "")
    )


def _settings_table(
    values: Mapping[str, Any], app_config: Mapping[str, Any], derived: set[str]
) -> Table:
    """Every setting: dotted name, value (secrets masked) and source."""
    sources = _Sources(
        derived,
        set(flatten(raw_options(app_config))),
        {name.upper() for name in os.environ},
        set(flatten(_toml_values())),
    )
    table = Table(title="Effective eventseam settings", title_justify="left")
    for column in ("setting", "value", "source"):
        table.add_column(column)
    for key, value in flatten(values).items():
        table.add_row(key, mask(key, value), sources.of(key))
    return table


def _toml_values() -> dict[str, Any]:
    """The TOML file's values (empty without a readable file; ``config check`` still runs)."""
    path = config_file()
    if path is None:
        return {}
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError):
        return {}


@dataclass(frozen=True, slots=True)
class _Sources:
    """Dotted names derived from Flask-SQLAlchemy, set in app.config or the TOML file; env names."""

    derived: set[str]
    app: set[str]
    env: set[str]
    file: set[str]

    def of(self, key: str) -> str:
        """Where ``key`` comes from: Flask-SQLAlchemy, app.config, env, file or default."""
        if key in self.derived:
            return "Flask-SQLAlchemy"
        if _within(key, self.app):
            return "app.config"
        parts = key.split(".")
        if any(
            PREFIX + "__".join(parts[:end]).upper() in self.env for end in range(1, len(parts) + 1)
        ):
            return "env"
        return "file" if _within(key, self.file) else "default"


def _within(key: str, names: set[str]) -> bool:
    """True when ``key`` or a section holding it is in ``names``."""
    return key in names or any(key.startswith(name + ".") for name in names)
