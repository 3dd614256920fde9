"""Django system checks for settings.EVENTSEAM (``manage.py check``; run before every command).

Errors (ids ``eventseam.E0xx``) name the key at fault and hint at the fix:

    E001 settings.EVENTSEAM is missing or not a dict
    E002 an unknown key (EventSeamSettings would ignore it silently) - "did you mean ...?"
    E003 bounded_contexts is missing, or an entry cannot be imported as a BoundedContext
    E004 database is not an alias of DATABASES, or its vendor is not PostgreSQL/SQLite
    E005 a context's mode is not a mode (a misspelling) - "did you mean 'dual'?"
    E006 any other invalid value (pydantic's message, with the path of the value)
    E007 a mode or topic setting names a context that no bounded context declares
    E008 the EventSeam cannot be built from these settings (for example duplicate handler names)
    E009 middlewares is not a list, or an entry cannot be imported as a callable

Warnings: ``eventseam.W001`` EVENTSEAM_* environment variables that no setting reads;
``eventseam.W002`` no ``database_url`` set and none derivable from DATABASES (in-memory SQLite);
``eventseam.W003`` a handler subscribed to an event type no listed context owns (it never runs).
E002, E003, E005 to E009, W001 and W003 are worked out by engine.integrations.common, which the
Flask integration shares; E001, E004 and W002 are Django's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.checks import CheckMessage, Error
from django.core.checks import Warning as CheckWarning

from engine.integrations.common import (
    Problem,
    build_problems,
    context_problems,
    did_you_mean,
    env_problems,
    load_with_problems,
    middleware_problems,
    unknown_context_problems,
    unknown_key_problems,
    unowned_subscription_problems,
)

from .conf import (
    DEFAULT_DATABASE,
    DJANGO_KEYS,
    SETTING,
    SPELLING,
    database_url,
    django_options,
)
from .schema import VENDORS

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from engine.settings import EventSeamSettings

__all__ = ["check_settings"]

_EXAMPLE = (
    "EVENTSEAM = {'bounded_contexts': ['myproject.orders:orders'], 'contexts': {'orders': 'local'}}"
)


def check_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """Every problem of settings.EVENTSEAM, as Django check messages."""
    from django.conf import settings as django_settings

    raw = getattr(django_settings, SETTING, None)
    if not isinstance(raw, dict):
        what = "is not set" if raw is None else f"must be a dict, not {type(raw).__name__}"
        return [Error(f"settings.{SETTING} {what}", hint=_EXAMPLE, id="eventseam.E001")]
    problems = unknown_key_problems(raw, SPELLING, DJANGO_KEYS)
    contexts, context_errors = context_problems(raw.get("bounded_contexts"), SPELLING)
    problems += context_errors
    problems += middleware_problems(raw.get("middlewares"), SPELLING)[1]
    messages = _messages(problems)
    messages += _database(raw.get("database", DEFAULT_DATABASE), django_settings.DATABASES)
    settings, invalid = load_with_problems(django_options(raw), SPELLING)
    messages += _messages(invalid)
    if settings is not None and not context_errors:
        messages += _messages(unknown_context_problems(settings, contexts, SPELLING))
        if not messages:
            messages += _messages(build_problems(settings, contexts, SPELLING))
    if settings is not None and not messages:
        messages += _database_url(settings, raw.get("database", DEFAULT_DATABASE))
    unowned = unowned_subscription_problems(contexts, SPELLING)
    return messages + _messages(unowned) + _messages(env_problems())


def _messages(problems: Iterable[Problem]) -> list[CheckMessage]:
    """Problems as check messages (``E`` codes are errors, ``W`` codes warnings)."""
    return [
        (Error if problem.is_error else CheckWarning)(
            problem.message, hint=problem.hint, id=f"eventseam.{problem.code}"
        )
        for problem in problems
    ]


def _database(alias: object, databases: dict[str, Any]) -> list[CheckMessage]:
    if not isinstance(alias, str) or alias not in databases:
        return [
            Error(
                f"settings.{SETTING}['database'] = {alias!r} is not an alias of settings.DATABASES",
                hint=did_you_mean(str(alias), list(databases), "aliases"),
                id="eventseam.E004",
            )
        ]
    from django.db import connections

    vendor = connections[alias].vendor
    if vendor not in VENDORS:
        return [
            Error(
                f"database {alias!r} is {vendor!r}; eventseam's outbox supports PostgreSQL and SQLite",
                hint=f"point settings.{SETTING}['database'] at a PostgreSQL or SQLite alias",
                id="eventseam.E004",
            )
        ]
    return []


def _database_url(settings: EventSeamSettings, alias: str) -> list[CheckMessage]:
    if "database_url" in settings.model_fields_set or database_url(alias) is not None:
        return []
    return [
        CheckWarning(
            f"database_url cannot be derived from DATABASES[{alias!r}] (in-memory SQLite?) and is "
            f"not set: the relay, eventseam_flags and handler sessions would use {settings.database_url!r}",
            hint=f"set settings.{SETTING}['database_url'] to a SQLAlchemy URL of that database",
            id="eventseam.W002",
        )
    ]
