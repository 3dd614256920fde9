"""SQLAlchemy Core statements on Django's cursor, in Django's transaction.

- ``dialect_of(connection)``: the SQLAlchemy dialect matching a Django connection's vendor and
  DBAPI driver, with ``paramstyle="format"`` (the ``%s`` placeholders Django's cursors take,
  SQLite's included). The outbox INSERT (publish.py) and the key statements compile with it.
- ``CursorExecutor``: the key table's ``KeyExecutor`` (engine.crypto_keys) on a Django
  connection. engine.crypto_keys builds the statements (one key logic for every publish path);
  here they are compiled for the connection's dialect (IN lists expanded, bind processors
  applied) and run on ``connection.cursor()``, so subject keys are read and created in the very
  transaction of the ORM's writes and the outbox rows: a rolled-back atomic block leaves no key.
  No SQLAlchemy engine touches Django's connection (measured: that silently rolls back Django's
  writes).

On SQLite the executor's first statement is a write that changes nothing: Django opens
transactions with a deferred ``BEGIN``, and a transaction that has read cannot wait for the write
lock (SQLite answers "database is locked" at once instead of waiting ``timeout``; measured with
the bus's inbox writes running in other threads). Writing first, the key reads and the outbox
INSERT run under the write lock, which the connection waits for like any write. A transaction
that only read before ``publish`` can still fail so; Django 5.1's SQLite option
``"transaction_mode": "IMMEDIATE"`` avoids it for every transaction.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Final

from django.db import NotSupportedError
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.sql.compiler import SQLCompiler

from outbox.key_table import subject_keys

from .schema import VENDORS

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.backends.utils import CursorWrapper
    from sqlalchemy import Insert, Select
    from sqlalchemy.engine import Dialect

__all__ = ["CursorExecutor", "dialect_of"]

#: Dialects by (vendor, DBAPI module name). Kept alive here: compiled statements are cached per
#: dialect (outbox.writer.compiled_insert).
_DIALECTS: Final[dict[tuple[str, str], Dialect]] = {}
_dialects_lock = threading.Lock()
#: A write that changes nothing: takes SQLite's write lock (waiting for it like any write).
_SQLITE_WRITE_LOCK: Final = f"UPDATE {subject_keys.name} SET version = version WHERE 0"


def dialect_of(connection: BaseDatabaseWrapper) -> Dialect:
    """The SQLAlchemy dialect of Django ``connection`` (``%s`` placeholders).

    Raises django.db.NotSupportedError for a backend other than PostgreSQL and SQLite.
    """
    vendor = connection.vendor
    dbapi = getattr(getattr(connection, "Database", None), "__name__", "")
    key = (vendor, dbapi)
    found = _DIALECTS.get(key)
    if found is not None:
        return found
    if vendor not in VENDORS:
        raise NotSupportedError(
            f"eventseam's outbox supports PostgreSQL and SQLite, not Django's {vendor!r} backend"
        )
    with _dialects_lock:
        return _DIALECTS.setdefault(key, _new_dialect(vendor, dbapi))


class CursorExecutor:
    """A KeyExecutor (engine.crypto_keys) running statements on Django ``connection``'s cursor.

    Statements run in the connection's current transaction (the caller's ``atomic`` block).
    Values come back as the DBAPI returns them (bytea may be a memoryview with psycopg2).
    """

    __slots__ = ("_connection", "_dialect", "_needs_write_lock")

    def __init__(self, connection: BaseDatabaseWrapper) -> None:
        self._connection = connection
        self._dialect = dialect_of(connection)
        self._needs_write_lock = connection.vendor == "sqlite"

    @property
    def dialect(self) -> Dialect:
        """The SQLAlchemy dialect the statements are compiled for."""
        return self._dialect

    def fetch(self, query: Select[Any]) -> Sequence[Sequence[Any]]:
        """The rows of ``query``."""
        compiled = _compile(query, self._dialect, compile_kwargs={"render_postcompile": True})
        parameters = _parameters(compiled, self._dialect, None)
        with self._connection.cursor() as cursor:
            self._take_write_lock(cursor)
            cursor.execute(compiled.string, parameters)
            return list(cursor.fetchall())

    def insert_many(self, statement: Insert, rows: Sequence[Mapping[str, Any]]) -> None:
        """``statement`` once per row (one ``executemany``); all rows have the same keys."""
        if not rows:
            return
        compiled = _compile(statement, self._dialect, column_keys=list(rows[0]))
        batch = [_parameters(compiled, self._dialect, row) for row in rows]
        with self._connection.cursor() as cursor:
            self._take_write_lock(cursor)
            cursor.executemany(compiled.string, batch)

    def _take_write_lock(self, cursor: CursorWrapper) -> None:
        """On SQLite, before the first statement: a no-op write (see the module docstring)."""
        if self._needs_write_lock:
            cursor.execute(_SQLITE_WRITE_LOCK)
            self._needs_write_lock = False


def _compile(statement: Select[Any] | Insert, dialect: Dialect, **options: Any) -> SQLCompiler:
    compiled = statement.compile(dialect=dialect, **options)
    if not isinstance(compiled, SQLCompiler):  # pragma: no cover  (Core statements compile so)
        raise TypeError(f"{type(statement).__name__} did not compile to SQL")
    return compiled


def _parameters(
    compiled: SQLCompiler, dialect: Dialect, values: Mapping[str, Any] | None
) -> tuple[Any, ...] | dict[str, Any]:
    """DBAPI parameters of ``compiled`` with ``values``: bind processors applied, in placeholder
    order (a tuple for positional paramstyles, a dict for named ones)."""
    params = dict(compiled.construct_params(values))
    processors = _processors(compiled, dialect)
    for name, process in processors.items():
        if name in params:
            params[name] = process(params[name])
    if compiled.positiontup is None:
        return params
    return tuple(params[name] for name in compiled.positiontup)


def _processors(compiled: SQLCompiler, dialect: Dialect) -> dict[str, Callable[[Any], Any]]:
    """Bind processors of ``compiled``'s parameters, by name (types that convert their values)."""
    found: dict[str, Callable[[Any], Any]] = {}
    for bind, name in compiled.bind_names.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is None:
            continue
        if bind.expanding:  # IN lists of such types are not used by the key statements
            raise NotSupportedError(
                f"eventseam cannot run an IN list of {bind.type!r} values on Django's cursor"
            )
        found[name] = process
    return found


def _new_dialect(vendor: str, dbapi: str) -> Dialect:
    options: dict[str, Any] = {"paramstyle": "format"}
    if vendor == "sqlite":
        return SQLiteDialect_pysqlite(**options)
    if dbapi == "psycopg":
        return PGDialect_psycopg(**options)  # type: ignore[no-untyped-call]  # SQLAlchemy leaves it untyped
    return PGDialect_psycopg2(**options)  # type: ignore[no-untyped-call]  # SQLAlchemy leaves it untyped
