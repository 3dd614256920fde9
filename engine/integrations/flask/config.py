"""Flask settings: ``app.config``'s ``EVENTSEAM_*`` keys, validated by EventSeamSettings.

    app.config["EVENTSEAM_BOUNDED_CONTEXTS"] = ["myapp.orders:orders"]   # or FlaskEventSeam(contexts=...)
    app.config["EVENTSEAM_CONTEXTS"] = {"orders": "dual"}
    app.config["EVENTSEAM_KAFKA"] = {"bootstrap_servers": "kafka:9092"}
    app.config["EVENTSEAM_KAFKA__ACKS"] = "1"                           # ``__`` nests, as in env vars

Each key is a setting's ``EVENTSEAM_`` name (the environment variable's spelling); its value is
an init value, so it wins over ``EVENTSEAM_*`` environment variables and ``eventseam.toml``.
``EVENTSEAM_BOUNDED_CONTEXTS`` is the Flask-only key: the BoundedContext objects, as
``"module:attribute"`` or the objects themselves. When ``database_url`` is set nowhere, it is
Flask-SQLAlchemy's default engine URL, so the relay and the CLI use the very database the app
writes. Unknown keys are errors, never silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy.engine import make_url

from engine.integrations.common import (
    Problem,
    Spelling,
    build_problems,
    context_problems,
    env_problems,
    load_with_problems,
    unknown_context_problems,
    unknown_key_problems,
    unowned_subscription_problems,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from engine.contexts import BoundedContext
    from engine.settings import EventSeamSettings

__all__ = ["FLASK_KEYS", "PREFIX", "SPELLING", "FlaskConfig", "diagnose", "raw_options"]

PREFIX: Final = "EVENTSEAM_"
#: Settings read by the Flask integration itself (not passed to EventSeamSettings).
FLASK_KEYS: Final = ("bounded_contexts",)
#: How messages name the keys: ``app.config['EVENTSEAM_CONTEXTS']['orders']``.
SPELLING: Final = Spelling(owner="app.config", key=lambda name: PREFIX + name.upper())


@dataclass(frozen=True, slots=True)
class FlaskConfig:
    """The app's eventseam configuration, read: validated settings and the bounded contexts.

    ``derived_url`` is True when ``database_url`` came from Flask-SQLAlchemy's engine.
    """

    settings: EventSeamSettings
    contexts: tuple[BoundedContext, ...]
    derived_url: bool = False


def raw_options(config: Mapping[str, Any]) -> dict[str, Any]:
    """``EVENTSEAM_*`` keys of ``config`` as nested settings values (copies; ``config`` untouched).

    ``EVENTSEAM_KAFKA`` -> ``kafka``; ``EVENTSEAM_KAFKA__ACKS`` -> ``kafka.acks`` (merged into the
    section, the nested key winning).
    """
    options: dict[str, Any] = {}
    names = sorted((key for key in config if key.startswith(PREFIX)), key=lambda k: k.count("__"))
    for name in names:
        *sections, leaf = name[len(PREFIX) :].lower().split("__")
        target = options
        for section in sections:
            nested = target.get(section)
            if not isinstance(nested, dict):
                nested = target[section] = {}
            target = nested
        value = config[name]
        target[leaf] = _copy(value)
    return options


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    return value


def diagnose(
    config: Mapping[str, Any],
    *,
    contexts: Sequence[BoundedContext] | None,
    default_url: str | None,
) -> tuple[FlaskConfig | None, list[Problem]]:
    """Read ``config``: the configuration (None when an error prevents it) and every problem.

    ``contexts`` are the bounded contexts given to the extension (else the config key lists
    them); ``default_url`` is Flask-SQLAlchemy's engine URL. Codes are those of
    engine.integrations.common plus W002 (an in-memory SQLite database).
    """
    raw = raw_options(config)
    problems = unknown_key_problems(raw, SPELLING, FLASK_KEYS)
    found, context_errors = _contexts(raw.get("bounded_contexts"), contexts)
    problems += context_errors
    options = {key: value for key, value in raw.items() if key not in FLASK_KEYS}
    settings, invalid = load_with_problems(options, SPELLING)
    problems += invalid
    if settings is None or context_errors:
        return None, problems + env_problems()
    problems += unknown_context_problems(settings, found, SPELLING)
    problems += unowned_subscription_problems(found, SPELLING)
    if not any(problem.is_error for problem in problems):
        problems += build_problems(settings, found, SPELLING)
    derived = "database_url" not in settings.model_fields_set and default_url is not None
    if derived:
        settings = settings.model_copy(update={"database_url": default_url})
    problems += _memory_database(settings.database_url) + env_problems()
    if any(problem.is_error for problem in problems):
        return None, problems
    return FlaskConfig(settings, tuple(found), derived), problems


def _contexts(
    value: object, given: Sequence[BoundedContext] | None
) -> tuple[list[BoundedContext], list[Problem]]:
    if given is None:
        return context_problems(value, SPELLING)
    if value is not None:
        return [], [
            Problem(
                "E003",
                "the bounded contexts are given twice: to the extension (contexts=...) and in "
                f"{SPELLING.where(('bounded_contexts',))}",
                "give them in one place",
            )
        ]
    return context_problems(list(given), SPELLING)


def _memory_database(url: str) -> list[Problem]:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database not in (None, "", ":memory:"):
        return []
    return [
        Problem(
            "W002",
            "the outbox database is an in-memory SQLite database: no other process (the relay, "
            "`flask eventseam ...` commands) can read it, and Flask-SQLAlchemy shares its one "
            "connection between request and handler threads",
            "use a SQLite file or PostgreSQL (SQLALCHEMY_DATABASE_URI or EVENTSEAM_DATABASE_URL)",
        )
    ]
