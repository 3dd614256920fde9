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

Warnings: ``eventseam.W001`` EVENTSEAM_* environment variables that no setting reads;
``eventseam.W002`` no ``database_url`` set and none derivable from DATABASES (in-memory SQLite).
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from django.core.checks import CheckMessage, Error
from django.core.checks import Warning as CheckWarning
from pydantic import BaseModel, ValidationError

from engine.errors import EngineError
from engine.modes import Mode
from engine.seam import EventSeam
from engine.settings import EventSeamSettings, load_settings, unknown_env_vars

from .conf import (
    DEFAULT_DATABASE,
    DJANGO_KEYS,
    SETTING,
    database_url,
    django_options,
    import_context,
)
from .errors import EventSeamImproperlyConfigured
from .schema import VENDORS

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from engine.contexts import BoundedContext

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
    messages: list[CheckMessage] = list(_unknown_keys(raw))
    contexts, context_errors = _bounded_contexts(raw.get("bounded_contexts"))
    messages += context_errors
    messages += _database(raw.get("database", DEFAULT_DATABASE), django_settings.DATABASES)
    try:
        settings = load_settings(**django_options(raw))
    except ValidationError as exc:
        messages += _validation_errors(exc)
        settings = None
    if settings is not None and not context_errors:
        messages += _unknown_contexts(settings, contexts)
        if not messages:
            messages += _build(settings, contexts)
    if settings is not None and not messages:
        messages += _database_url(settings, raw.get("database", DEFAULT_DATABASE))
    messages += [
        CheckWarning(
            f"environment variable {name} is not an eventseam setting and is ignored",
            hint="check its spelling (nested settings use a double underscore, e.g. EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS)",
            id="eventseam.W001",
        )
        for name in unknown_env_vars()
    ]
    return messages


def _unknown_keys(raw: dict[str, Any]) -> Iterable[CheckMessage]:
    allowed = [*DJANGO_KEYS, *EventSeamSettings.model_fields]
    for key in raw:
        if key not in allowed:
            yield Error(
                f"settings.{SETTING} has an unknown key {key!r}",
                hint=_did_you_mean(key, allowed, "keys"),
                id="eventseam.E002",
            )
    for key, value in raw.items():
        if key in EventSeamSettings.model_fields and isinstance(value, dict):
            yield from _unknown_nested(
                f"[{key!r}]", value, EventSeamSettings.model_fields[key].annotation
            )


def _unknown_nested(path: str, value: dict[str, Any], annotation: Any) -> Iterable[CheckMessage]:
    """Unknown keys inside a settings section (``kafka``, ``relay``...) or a per-context section."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        allowed = list(annotation.model_fields)
        for key in value:
            if key not in allowed:
                yield Error(
                    f"settings.{SETTING}{path} has an unknown key {key!r}",
                    hint=_did_you_mean(key, allowed, "keys"),
                    id="eventseam.E002",
                )
        return
    args: tuple[Any, ...] = getattr(annotation, "__args__", ())
    if getattr(annotation, "__origin__", None) is dict and len(args) == 2:
        for name, item in value.items():
            if isinstance(item, dict):
                yield from _unknown_nested(f"{path}[{name!r}]", item, args[1])


def _bounded_contexts(value: object) -> tuple[list[BoundedContext], list[CheckMessage]]:
    hint = "list the BoundedContext objects as 'module:attribute', e.g. ['myproject.orders:orders']"
    if not isinstance(value, list | tuple) or not value:
        message = f"settings.{SETTING}['bounded_contexts'] must be a non-empty list"
        return [], [Error(message, hint=hint, id="eventseam.E003")]
    contexts: list[BoundedContext] = []
    errors: list[CheckMessage] = []
    for item in value:
        try:
            contexts.append(import_context(item))
        except (ImportError, AttributeError, TypeError) as exc:
            errors.append(
                Error(
                    f"settings.{SETTING}['bounded_contexts'] entry {item!r} is not usable: {exc}",
                    hint=hint,
                    id="eventseam.E003",
                )
            )
    return contexts, errors


def _database(alias: object, databases: dict[str, Any]) -> list[CheckMessage]:
    if not isinstance(alias, str) or alias not in databases:
        return [
            Error(
                f"settings.{SETTING}['database'] = {alias!r} is not an alias of settings.DATABASES",
                hint=_did_you_mean(str(alias), list(databases), "aliases"),
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


def _validation_errors(exc: ValidationError) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    modes = [mode.value for mode in Mode]
    for error in exc.errors():
        loc = error["loc"]
        path = "".join(f"[{part!r}]" for part in loc)
        if len(loc) == 2 and loc[0] == "contexts" and error["type"] == "enum":
            messages.append(
                Error(
                    f"settings.{SETTING}{path} = {error['input']!r} is not a routing mode",
                    hint=_did_you_mean(str(error["input"]).lower(), modes, "modes"),
                    id="eventseam.E005",
                )
            )
            continue
        messages.append(
            Error(
                f"invalid eventseam setting {path or '(root)'}: {error['msg']} (got {error.get('input')!r})",
                hint=f"settings.{SETTING}, EVENTSEAM_* variables and eventseam.toml are validated "
                "by engine.settings.EventSeamSettings",
                id="eventseam.E006",
            )
        )
    return messages


def _unknown_contexts(
    settings: EventSeamSettings, contexts: list[BoundedContext]
) -> list[CheckMessage]:
    known = [context.name for context in contexts]
    messages: list[CheckMessage] = []
    for section in ("contexts", "topics"):
        for name in getattr(settings, section):
            if name not in known:
                messages.append(
                    Error(
                        f"settings.{SETTING}[{section!r}] names unknown context {name!r}",
                        hint=_did_you_mean(name, known, "contexts (from bounded_contexts)"),
                        id="eventseam.E007",
                    )
                )
    return messages


def _build(settings: EventSeamSettings, contexts: list[BoundedContext]) -> list[CheckMessage]:
    try:
        EventSeam(settings, contexts)
    except (EngineError, EventSeamImproperlyConfigured, ValueError) as exc:
        return [
            Error(
                f"the EventSeam cannot be built from settings.{SETTING}: {exc}",
                hint="fix the bounded contexts or the settings named in the message",
                id="eventseam.E008",
            )
        ]
    return []


def _did_you_mean(value: str, choices: list[str], what: str) -> str:
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
    known = f"known {what}: {', '.join(choices) or 'none'}"
    return f"did you mean {close[0]!r}? {known}" if close else known
