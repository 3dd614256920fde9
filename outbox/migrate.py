"""Create and upgrade the eventseam schema (outbox, inbox, flags) with its shipped Alembic history.

The history has its own version table (``eventseam_alembic_version``), so it never reads or
writes the host's ``alembic_version``: a host keeps its own Alembic history untouched. Alembic is
configured in code (no ``alembic.ini``; the script location is this package's path), so it works
from an installed wheel.

``target`` is a URL (``str`` or ``URL``), an ``Engine`` or a ``Connection``. A URL or Engine runs
in a transaction of its own (all-or-nothing on PostgreSQL, which has transactional DDL); a
Connection is used as is: inside its open transaction (the caller commits), or in one Alembic
begins and commits. Every failure is raised as MigrationError.

``check_schema``/``require_schema`` compare a database's revision with ``head()`` at process
start-up (``eventseam relay`` and ``eventseam worker``): an older one raises SchemaOutOfDateError,
a database without eventseam's tables SchemaMissingError.

New revisions (for eventseam developers)::

    from alembic import command
    from outbox.migrate import alembic_config
    command.revision(alembic_config(), "add a column")   # then edit the new file by hand
"""

from __future__ import annotations

import enum
import importlib
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import URL, Connection, Engine, MetaData, create_engine, inspect, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from .errors import MigrationError, SchemaMissingError, SchemaOutOfDateError
from .table import metadata, outbox

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = [
    "SCRIPT_LOCATION",
    "TABLE_MODULES",
    "VERSION_TABLE",
    "SchemaState",
    "SchemaStatus",
    "alembic_config",
    "check_schema",
    "current",
    "downgrade",
    "head",
    "require_schema",
    "schema_metadata",
    "upgrade",
]

#: The version table of eventseam's own Alembic history (never the host's ``alembic_version``).
VERSION_TABLE: Final = "eventseam_alembic_version"

#: Directory of the Alembic environment and revisions, inside the installed package.
SCRIPT_LOCATION: Final = Path(__file__).resolve().parent / "migrations"

#: Modules whose tables live on ``outbox.table.metadata``; the history must create all of them
#: (the drift test compares). Add a module here when it defines a new eventseam table.
TABLE_MODULES: Final = (
    "outbox.table",
    "outbox.flag_table",
    "outbox.inbox_table",
    "outbox.lease_table",
    "outbox.dead_letter_table",
    "outbox.key_table",
)

Target = str | URL | Engine | Connection
_T = TypeVar("_T")

#: Alembic keeps the running command in module globals (``alembic.context``): one at a time per
#: process. Processes serialize on a PostgreSQL advisory lock (see migrations/env.py).
_alembic_lock = threading.Lock()

#: Seconds the start-up schema check waits to connect before giving up (and going on).
CHECK_CONNECT_TIMEOUT: Final = 5

log = structlog.get_logger(__name__)


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic Config for the outbox history; ``env.py`` migrates ``connection``."""
    config = Config()
    # ConfigParser interpolates "%": escape it in the path.
    config.set_main_option("script_location", str(SCRIPT_LOCATION).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def schema_metadata() -> MetaData:
    """``outbox.table.metadata`` with every table of TABLE_MODULES on it: what the history builds."""
    for name in TABLE_MODULES:
        importlib.import_module(name)
    return metadata


def head() -> str:
    """The newest revision of the shipped history."""
    found = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if found is None:  # pragma: no cover - the package always ships a revision
        raise MigrationError(f"no outbox revision found in {SCRIPT_LOCATION}")
    return found


def _describe(target: Target) -> str:
    if isinstance(target, Connection):
        return target.engine.url.render_as_string(hide_password=True)
    if isinstance(target, Engine):
        return target.url.render_as_string(hide_password=True)
    if isinstance(target, URL):
        return target.render_as_string(hide_password=True)
    try:
        return make_url(target).render_as_string(hide_password=True)
    except SQLAlchemyError:
        return "<unparsable URL>"


@contextmanager
def _connection(target: Target) -> Iterator[Connection]:
    """A connection to migrate: ``target`` itself, or one in a transaction of its own."""
    if isinstance(target, Connection):
        yield target
        return
    engine = target if isinstance(target, Engine) else create_engine(target)
    try:
        with engine.begin() as connection:
            yield connection
    finally:
        if engine is not target:
            engine.dispose()


def _run(action: str, target: Target, work: Callable[[Connection], _T]) -> _T:
    """Run ``work`` on a connection to ``target``; turn every failure into MigrationError."""
    try:
        with _alembic_lock, _connection(target) as connection:
            return work(connection)
    except MigrationError:
        raise
    except (SQLAlchemyError, CommandError) as exc:
        raise MigrationError(
            f"eventseam schema migration {action} failed on {_describe(target)}: {exc}"
        ) from exc


def upgrade(target: Target, revision: str = "head") -> None:
    """Upgrade the outbox schema of ``target`` to ``revision`` (default: the newest)."""
    _run(f"'upgrade {revision}'", target, lambda c: command.upgrade(alembic_config(c), revision))


def downgrade(target: Target, revision: str) -> None:
    """Downgrade the outbox schema of ``target`` to ``revision`` (``base`` drops the outbox).

    Dropping the outbox loses the events it holds, including unpublished ones.
    """
    _run(
        f"'downgrade {revision}'", target, lambda c: command.downgrade(alembic_config(c), revision)
    )


def current(target: Target) -> str | None:
    """The outbox revision ``target`` is at, or None when the schema was never created."""

    def read(connection: Connection) -> str | None:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()

    return _run("'current'", target, read)


class SchemaState(enum.Enum):
    """How a database's eventseam schema compares with this code's head (check_schema)."""

    CURRENT = "current"  # at head
    OUTDATED = "outdated"  # an older revision of the shipped history
    AHEAD = "ahead"  # a revision this code does not know: newer code migrated it
    UNVERSIONED = "unversioned"  # tables without a version table: create_all or Django's
    MISSING = "missing"  # neither a version table nor the outbox table: migrations never ran
    UNREACHABLE = "unreachable"  # the check could not connect or read


@dataclass(frozen=True)
class SchemaStatus:
    """The result of check_schema; ``database`` is the URL with its password hidden."""

    state: SchemaState
    database: str
    current: str | None
    expected: str
    error: str | None = None


def check_schema(target: str | URL | Engine) -> SchemaStatus:
    """Compare ``target``'s eventseam revision with head(); never raises for the database's sake.

    The database is opened with a short connect timeout (CHECK_CONNECT_TIMEOUT; an async driver
    is swapped for its sync twin): a server Engine is reopened from its URL for that (its
    ``connect_args`` are not reused), a SQLite Engine is used as it is. A failure to connect or
    read gives UNREACHABLE, so an outage is left to the callers' retry loops.
    """
    expected, database = head(), _describe(target)
    try:
        now, has_tables = _read_revision(target)
    except (SQLAlchemyError, MigrationError, ImportError) as exc:
        return SchemaStatus(SchemaState.UNREACHABLE, database, None, expected, error=str(exc))
    if now == expected:
        state = SchemaState.CURRENT
    elif now is None:  # no version table, or an empty one (every revision downgraded)
        state = SchemaState.UNVERSIONED if has_tables else SchemaState.MISSING
    elif now in _known_revisions():
        state = SchemaState.OUTDATED
    else:
        state = SchemaState.AHEAD
    return SchemaStatus(state, database, now, expected)


def require_schema(target: str | URL | Engine) -> SchemaStatus:
    """check_schema for a process start-up: raise SchemaOutOfDateError when OUTDATED and
    SchemaMissingError when MISSING (both SchemaError).

    Logs a structlog warning and returns for AHEAD (a rolling deploy: older code on a newer
    schema), UNVERSIONED (``schema.unversioned``) and UNREACHABLE; nothing for CURRENT.
    """
    status = check_schema(target)
    fields = {"database": status.database, "current": status.current, "expected": status.expected}
    if status.state is SchemaState.OUTDATED and status.current is not None:
        raise SchemaOutOfDateError(status.database, status.current, status.expected)
    if status.state is SchemaState.MISSING:
        raise SchemaMissingError(status.database, outbox.name)
    if status.state is SchemaState.AHEAD:
        log.warning("schema.ahead", **fields)
    elif status.state is SchemaState.UNVERSIONED:
        log.warning(
            "schema.unversioned",
            version_table=VERSION_TABLE,
            hint="tables made by create_all carry no revision to check",
            **fields,
        )
    elif status.state is SchemaState.UNREACHABLE:
        log.warning("schema.check_skipped", error=status.error, **fields)
    return status


def _read_revision(target: str | URL | Engine) -> tuple[str | None, bool]:
    """The revision in ``target``'s version table (None when the table is missing or empty),
    and whether the outbox table exists."""
    if isinstance(target, Engine) and target.dialect.name == "sqlite":
        engine = target  # a file or memory database: no network wait; memory needs this Engine
    else:
        engine = _check_engine(target.url if isinstance(target, Engine) else target)
    try:
        with engine.connect() as connection:
            tables = inspect(connection)
            has_outbox = tables.has_table(outbox.name)
            if not tables.has_table(VERSION_TABLE):
                return None, has_outbox
            return current(connection), has_outbox
    finally:
        if engine is not target:
            engine.dispose()


def _known_revisions() -> set[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return {revision.revision for revision in script.walk_revisions()}


def _check_engine(url: str | URL) -> Engine:
    """A sync, one-connection engine on ``url`` that gives up connecting after a few seconds."""
    parsed = make_url(url)
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    connect_args: dict[str, Any] = {}
    if backend == "postgresql":
        if driver in {"asyncpg", "psycopg_async"}:
            parsed = parsed.set(drivername="postgresql+psycopg")
        connect_args["connect_timeout"] = CHECK_CONNECT_TIMEOUT
    elif backend == "sqlite":
        if driver == "aiosqlite":
            parsed = parsed.set(drivername="sqlite")
        connect_args["timeout"] = CHECK_CONNECT_TIMEOUT
    return create_engine(parsed, connect_args=connect_args, poolclass=NullPool)
