"""Django settings: ``settings.EVENTSEAM``, one dict, validated by EventSeamSettings.

    EVENTSEAM = {
        # Django-only keys
        "bounded_contexts": ["contexts.orders:orders", "contexts.payments:payments"],
        "database": "default",          # Django alias of the outbox (default "default")
        "middlewares": ["myproject.observability:timed"],   # optional, Handler -> Handler
        # everything else is EventSeamSettings (init values: they win over EVENTSEAM_* and TOML)
        "contexts": {"orders": "dual"},
        "kafka": {"bootstrap_servers": "kafka:9092"},
    }

``bounded_contexts`` names the BoundedContext objects (``"module:attribute"`` or
``"module.attribute"``; objects are accepted too); ``middlewares`` the handler middlewares the
same way (the first one outermost; they wrap every handler call on the bus and from Kafka).
When ``database_url`` is set nowhere (neither here, nor ``EVENTSEAM_DATABASE_URL``, nor the TOML
file), it is derived from ``DATABASES[database]``, so the relay and ``eventseam_flags`` use the
very database Django writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from pydantic import ValidationError
from sqlalchemy.engine import URL

from engine.integrations.common import Spelling, import_context, middleware_problems
from engine.settings import load_settings

from .errors import EventSeamImproperlyConfigured

if TYPE_CHECKING:
    from engine.contexts import BoundedContext
    from engine.settings import EventSeamSettings
    from engine.types import Middleware

__all__ = [
    "DEFAULT_DATABASE",
    "DJANGO_KEYS",
    "SETTING",
    "SPELLING",
    "DjangoConfig",
    "database_url",
    "django_options",
    "import_context",
    "load_config",
    "raw_setting",
]

SETTING: Final = "EVENTSEAM"
#: How messages name settings.EVENTSEAM's keys (engine.integrations.common).
SPELLING: Final = Spelling(owner=f"settings.{SETTING}")
DEFAULT_DATABASE: Final = "default"
#: Keys of settings.EVENTSEAM read by the Django integration (not passed to EventSeamSettings).
DJANGO_KEYS: Final = ("bounded_contexts", "database", "middlewares")
#: libpq parameters copied from a PostgreSQL alias's OPTIONS into the derived SQLAlchemy URL.
_LIBPQ_OPTIONS: Final = frozenset(
    {
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslpassword",
        "passfile",
        "service",
        "options",
        "application_name",
        "connect_timeout",
        "target_session_attrs",
    }
)


@dataclass(frozen=True, slots=True)
class DjangoConfig:
    """settings.EVENTSEAM, read: validated settings, the bounded contexts, the outbox's alias,
    the handler middlewares."""

    settings: EventSeamSettings
    contexts: tuple[BoundedContext, ...]
    database: str
    middlewares: tuple[Middleware, ...] = ()


def raw_setting() -> dict[str, Any]:
    """A copy of settings.EVENTSEAM (empty when unset); EventSeamImproperlyConfigured if not a dict."""
    from django.conf import settings

    value = getattr(settings, SETTING, None)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise EventSeamImproperlyConfigured(
            f"settings.{SETTING} must be a dict, not {type(value).__name__}"
        )
    return dict(value)


def django_options(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The EventSeamSettings part of ``raw`` (the Django-only keys removed)."""
    return {key: value for key, value in raw.items() if key not in DJANGO_KEYS}


def database_url(alias: str) -> str | None:
    """A SQLAlchemy URL for Django's database ``alias`` (None for in-memory or other vendors).

    Reads the connection's live settings, so under Django's test runner it names the test database.
    """
    from django.db import connections

    connection = connections[alias]
    conf = connection.settings_dict
    name = str(conf.get("NAME") or "")
    if connection.vendor == "sqlite":
        if not name or name == ":memory:" or "mode=memory" in name:
            return None
        query = {"uri": "true"} if name.startswith("file:") else {}
        return URL.create("sqlite", database=name, query=query).render_as_string(
            hide_password=False
        )
    if connection.vendor != "postgresql":
        return None
    dbapi = getattr(connection, "Database", None)
    driver = "psycopg" if getattr(dbapi, "__name__", "") == "psycopg" else "psycopg2"
    options = conf.get("OPTIONS") or {}
    port = conf.get("PORT")
    return URL.create(
        f"postgresql+{driver}",
        username=conf.get("USER") or None,
        password=conf.get("PASSWORD") or None,
        host=conf.get("HOST") or None,
        port=int(port) if port else None,
        database=name or None,
        query={key: str(value) for key, value in options.items() if key in _LIBPQ_OPTIONS},
    ).render_as_string(hide_password=False)


def load_config() -> DjangoConfig:
    """Read and validate settings.EVENTSEAM; EventSeamImproperlyConfigured when unusable."""
    from django.conf import settings as django_settings

    raw = raw_setting()
    database = raw.get("database", DEFAULT_DATABASE)
    if not isinstance(database, str) or database not in django_settings.DATABASES:
        raise EventSeamImproperlyConfigured(
            f"settings.{SETTING}['database'] = {database!r} is not an alias of settings.DATABASES"
        )
    contexts = _contexts(raw.get("bounded_contexts"))
    middlewares, problems = middleware_problems(raw.get("middlewares"), SPELLING)
    if problems:
        raise EventSeamImproperlyConfigured(f"{problems[0].message} ({problems[0].hint})")
    try:
        settings = load_settings(**django_options(raw))
    except ValidationError as exc:
        raise EventSeamImproperlyConfigured(
            f"invalid eventseam settings (settings.{SETTING}, EVENTSEAM_* variables or "
            f"eventseam.toml): {exc}; run `manage.py check` for details"
        ) from exc
    if "database_url" not in settings.model_fields_set:
        derived = database_url(database)
        if derived is not None:
            settings = settings.model_copy(update={"database_url": derived})
    return DjangoConfig(settings, contexts, database, tuple(middlewares))


def _contexts(value: object) -> tuple[BoundedContext, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise EventSeamImproperlyConfigured(
            f"settings.{SETTING}['bounded_contexts'] must list the BoundedContext objects, "
            "e.g. ['contexts.orders:orders']"
        )
    try:
        return tuple(import_context(item) for item in value)
    except (ImportError, AttributeError, TypeError) as exc:
        raise EventSeamImproperlyConfigured(
            f"settings.{SETTING}['bounded_contexts']: {exc}"
        ) from exc
