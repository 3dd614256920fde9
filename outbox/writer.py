"""The outbox writer: inserts encoded events in the caller's transaction, and never commits.

Contract (DESIGN.md, "The outbox"):

- The rows are inserted on the caller's ``Session``/``Connection``, inside the transaction (or
  savepoint) that is open there; they commit or roll back with the business write. Nothing is
  queued for a flush hook (measured: that loses events when nothing else is dirty).
- ``strategy`` says when the INSERT runs. ``WriteStrategy.IMMEDIATE`` (the default of ``write``):
  at once. ``WriteStrategy.AT_COMMIT`` (what ``EventSeam.publish`` asks for): on psycopg 3
  engines or connections that opt in with the execution option
  ``eventseam_outbox_write="at_commit"``, the rows are checked and built at once but held with
  the transaction and sent in the same network flight as its COMMIT, or earlier before any
  statement that could read them; a rolled-back SAVEPOINT drops them; an INSERT that fails then
  fails the commit (see outbox.deferred). Everything else gets the immediate INSERT.
- Several records go out as ONE multi-row INSERT statement (batches above
  ``MAX_ROWS_PER_STATEMENT`` rows are split, still in the caller's transaction).
- A session or connection without an open transaction, or one running in AUTOCOMMIT isolation,
  is refused with OutsideTransactionError before anything is written: its rows would commit on
  their own.

Speed (this runs in every business transaction; bench/outbox_write.py): SQLAlchemy does not
cache multi-row VALUES inserts (every call recompiles: ~0.15 ms for one row, ~1 ms for ten), so
the statement is compiled once per dialect and row count and run with
``Connection.exec_driver_sql``, the writer applying the columns' bind processors as SQLAlchemy
would; engine events (``before_cursor_execute``), logging and error translation still apply
(IMMEDIATE; AT_COMMIT rows go through the driver's cursor, see outbox.deferred). On
psycopg 3, batches of 5+ rows use ``INSERT ... SELECT ... FROM unnest(<one array per column>)``
instead of a VALUES list, which psycopg would re-parse on every call (see _uses_unnest).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import bindparam, insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, scoped_session

from engine.modes import Mode
from engine.unit_of_work import defer_until_commit

from .deferred import PsycopgDeferredWriter, supported
from .errors import OutsideTransactionError
from .murmur2 import key_hash
from .table import Status, outbox

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    from engine.codec import EncodedEvent

__all__ = [
    "COLUMNS",
    "MAX_ROWS_PER_STATEMENT",
    "CompiledInsert",
    "WriteStrategy",
    "build_rows",
    "compiled_insert",
    "joined_connection",
    "statements_for",
    "write",
    "write_async",
]


class WriteStrategy(StrEnum):
    """When the writer's INSERT runs (see the module docstring).

    IMMEDIATE   at once, on the caller's connection (every dialect);
    AT_COMMIT   psycopg 3: with the transaction's COMMIT, in one network flight (or before a
                statement that could read the rows); elsewhere the same as IMMEDIATE.
    """

    IMMEDIATE = "immediate"
    AT_COMMIT = "at_commit"


#: Columns the writer fills, in table order (seq, created_at, last_error, published_at are left
#: to the database).
COLUMNS: Final[tuple[str, ...]] = (
    "id",
    "aggregatetype",
    "aggregateid",
    "type",
    "version",
    "payload",
    "headers",
    "keyhash",
    "mode",
    "status",
    "attempts",
    "occurred_at",
)

#: Rows per INSERT statement: 6,000 bind parameters, under SQLite's (32,766) and PostgreSQL's
#: (65,535) limits. Larger batches take several statements in the same transaction.
MAX_ROWS_PER_STATEMENT: Final = 500

#: VALUES statements are cached per dialect for batches up to this many rows.
_CACHED_ROW_COUNTS: Final = 64

#: From this many rows on, psycopg 3 gets the unnest form of the INSERT (see _uses_unnest).
_UNNEST_MIN_ROWS: Final = 5

_STATUS_OF: Final[dict[Mode, str]] = {
    Mode.LOCAL: Status.LOCAL,
    Mode.DUAL: Status.PENDING,
    Mode.BROKER: Status.PENDING,
}

#: (``mode`` column, ``status`` column) of each mode, looked up once per record.
_MODE_COLUMNS: Final[dict[str, tuple[str, str]]] = {
    mode: (mode.value, status) for mode, status in _STATUS_OF.items()
}

#: key_hash is pure Python (~7 us for a UUID key); a transaction's events usually share their
#: aggregate, and hot aggregates repeat, so recent keys are remembered.
_key_hash: Final = functools.lru_cache(maxsize=1024)(key_hash)

_Row = tuple[Any, ...]
_Processor = Callable[[Any], Any]


def _mode_columns(mode: Mode | str) -> tuple[str, str]:
    """(``mode``, ``status``) column values of ``mode``; ValueError for an unknown mode."""
    found = _MODE_COLUMNS.get(mode)  # a Mode is a str: "dual" finds Mode.DUAL's entry
    return found if found is not None else _MODE_COLUMNS[Mode(mode)]


def _row(record: EncodedEvent, columns: tuple[str, str]) -> _Row:
    """The values of one outbox row, in COLUMNS order (``columns``: see _mode_columns)."""
    return (
        record.event_id,
        record.context,
        record.aggregate_id,
        record.event_type,
        record.version,
        record.value,
        record.headers_blob(),
        _key_hash(record.key),
        *columns,
        0,
        record.occurred_at,
    )


def _rows(records: Sequence[EncodedEvent], modes: Mode | Sequence[Mode]) -> list[_Row]:
    """Row values for ``records``; ``modes`` is one Mode for all, or one per record."""
    if isinstance(modes, str):  # a Mode (a StrEnum) is also a Sequence: test it first
        columns = _mode_columns(modes)
        return [_row(record, columns) for record in records]
    if len(modes) != len(records):
        raise ValueError(
            f"got {len(records)} records but {len(modes)} modes; pass one Mode, or one per record"
        )
    return [_row(record, _mode_columns(mode)) for record, mode in zip(records, modes, strict=True)]


def build_rows(
    records: Sequence[EncodedEvent], modes: Mode | Sequence[Mode]
) -> list[dict[str, Any]]:
    """One outbox row dict per record (keys: COLUMNS); ``modes`` is one Mode or one per record.

    ``status`` is ``local`` for Mode.LOCAL (kept, never relayed) and ``pending`` otherwise;
    ``headers`` is ``codec.encode_headers(record.headers)`` (``record.headers_blob()``);
    ``keyhash`` is ``key_hash(key)``.
    """
    return [dict(zip(COLUMNS, row, strict=True)) for row in _rows(records, modes)]


@dataclass(frozen=True, slots=True)
class CompiledInsert:
    """An outbox INSERT compiled for one dialect, with the parameter layout its cursor takes.

    ``parameters(rows)`` turns row tuples (COLUMNS order) into DBAPI parameters, bind processors
    applied: for a VALUES list, a flat tuple (positional paramstyles) or a dict (named ones) for
    exactly ``row_count`` rows; for the ``unnest`` form (``row_count`` None), one list per
    column, for any number of rows.
    """

    sql: str
    row_count: int | None
    names: tuple[str, ...] | None
    processors: tuple[tuple[int, _Processor], ...]

    def parameters(self, rows: Sequence[_Row]) -> tuple[Any, ...] | dict[str, Any]:
        """DBAPI parameters for ``rows``."""
        if self.row_count is None:
            columns = [list(column) for column in zip(*rows, strict=True)]
            for index, process in self.processors:
                columns[index] = [process(value) for value in columns[index]]
            return tuple(columns)
        flat: list[Any] = []
        if self.processors:
            for row in rows:
                values = list(row)
                for index, process in self.processors:
                    values[index] = process(values[index])
                flat.extend(values)
        else:
            for row in rows:
                flat.extend(row)
        if self.names is None:
            return tuple(flat)
        return dict(zip(self.names, flat, strict=True))


#: Compiled statements per dialect, keyed by row count (``None``: the unnest form).
_compiled: weakref.WeakKeyDictionary[Dialect, dict[int | None, CompiledInsert]] = (
    weakref.WeakKeyDictionary()
)


def _processors(dialect: Dialect) -> tuple[tuple[int, _Processor], ...]:
    """(column index, bind processor) of the COLUMNS whose type converts values for ``dialect``."""
    found = []
    for index, name in enumerate(COLUMNS):
        process = outbox.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            found.append((index, process))
    return tuple(found)


def _compile_values(dialect: Dialect, row_count: int) -> CompiledInsert:
    """``INSERT ... VALUES (...), (...)`` of ``row_count`` rows, compiled by SQLAlchemy."""
    names = tuple(f"{name}_{i}" for i in range(row_count) for name in COLUMNS)
    statement = insert(outbox).values(
        [
            {name: bindparam(f"{name}_{i}", type_=outbox.c[name].type) for name in COLUMNS}
            for i in range(row_count)
        ]
    )
    compiled = statement.compile(dialect=dialect)
    if compiled.positional and tuple(compiled.positiontup or ()) != names:  # pragma: no cover
        raise AssertionError("SQLAlchemy rendered the outbox INSERT parameters out of column order")
    return CompiledInsert(
        sql=compiled.string,
        row_count=row_count,
        names=None if compiled.positional else names,
        processors=_processors(dialect),
    )


def _compile_unnest(dialect: Dialect) -> CompiledInsert:
    """``INSERT ... SELECT ... FROM unnest(%b::type[], ...) ORDER BY ordinality`` (psycopg 3).

    One binary array parameter per column; rows are inserted in list order, so ``seq`` keeps the
    write order as it does for a VALUES list.
    """
    quote = dialect.identifier_preparer.quote
    columns = ", ".join(quote(name) for name in COLUMNS)
    arrays = ", ".join(f"%b::{outbox.c[name].type.compile(dialect)}[]" for name in COLUMNS)
    sql = (
        f"INSERT INTO {dialect.identifier_preparer.format_table(outbox)} ({columns}) "
        f"SELECT {columns} FROM unnest({arrays}) WITH ORDINALITY AS batch ({columns}, ordinality) "
        "ORDER BY ordinality"
    )
    return CompiledInsert(sql=sql, row_count=None, names=None, processors=_processors(dialect))


def _uses_unnest(dialect: Dialect, row_count: int) -> bool:
    """True when the unnest form beats a VALUES list: psycopg 3 on PostgreSQL, 5 rows or more.

    psycopg caches its parse of a query only up to 50 parameters (4 rows of 12 columns); above
    that it re-parses a VALUES list on every call (measured: ~16 us per row), while the unnest
    form keeps 12 parameters whatever the row count, and the server can prepare it once.
    """
    return (
        row_count >= _UNNEST_MIN_ROWS
        and dialect.name == "postgresql"
        and dialect.driver == "psycopg"
    )


def compiled_insert(
    dialect: Dialect, row_count: int, *, allow_unnest: bool = True
) -> CompiledInsert:
    """The outbox INSERT of ``row_count`` rows for ``dialect`` (cached; the writer's only statement).

    With psycopg 3 and 5+ rows (and ``allow_unnest``) it is ``INSERT ... SELECT * FROM
    unnest(...)`` with binary ``%b`` parameters, which needs a server-side-binding cursor (the
    SQLAlchemy default); pass ``allow_unnest=False`` for a client-side-binding cursor (Django's
    default). Otherwise it is a multi-row VALUES list, usable with any cursor of the dialect.
    """
    key = None if allow_unnest and _uses_unnest(dialect, row_count) else row_count
    by_count = _compiled.get(dialect)
    if by_count is None:
        by_count = _compiled.setdefault(dialect, {})
    found = by_count.get(key)
    if found is None:
        found = _compile_values(dialect, row_count) if key is not None else _compile_unnest(dialect)
        if key is None or key <= _CACHED_ROW_COUNTS:
            by_count[key] = found
    return found


def statements_for(dialect: Dialect, rows: Sequence[_Row]) -> list[tuple[str, Any]]:
    """(SQL, DBAPI parameters) of the INSERTs that write ``rows``: one per MAX_ROWS_PER_STATEMENT."""
    statements = []
    for start in range(0, len(rows), MAX_ROWS_PER_STATEMENT):
        chunk = rows[start : start + MAX_ROWS_PER_STATEMENT]
        statement = compiled_insert(dialect, len(chunk))
        statements.append((statement.sql, statement.parameters(chunk)))
    return statements


#: Writes the rows that AT_COMMIT deferred (engine.unit_of_work.DeferredWriter).
_DEFERRED: Final = PsycopgDeferredWriter(statements_for)


def _is_autocommit(connection: Connection) -> bool:
    """True when the connection commits every statement on its own (AUTOCOMMIT isolation)."""
    level = connection.get_execution_options().get("isolation_level")
    if level is None:  # the engine-wide create_engine(isolation_level=...) setting
        level = getattr(connection.dialect, "_on_connect_isolation_level", None)
    return level == "AUTOCOMMIT"


def joined_connection(target: Session | Connection | scoped_session[Session]) -> Connection:
    """The Connection of ``target``'s open transaction (the one ``write`` inserts on);
    OutsideTransactionError when there is none or it autocommits."""
    return _joined_connection(target)


def _joined_connection(target: Session | Connection | scoped_session[Session]) -> Connection:
    """The Connection of ``target``'s open transaction; OutsideTransactionError when there is none."""
    if isinstance(target, scoped_session):
        target = target()
    if isinstance(target, Session):
        if not target.in_transaction():
            raise OutsideTransactionError(
                "the outbox writer needs an open transaction, and this Session has none: publish "
                "inside `with session.begin():` (or once the session has begun, e.g. after "
                "session.add() or session.execute()) and commit it yourself; the writer never commits"
            )
        connection = target.connection(bind_arguments={"clause": outbox})
        kind = "Session's connection"
    elif isinstance(target, Connection):
        if not target.in_transaction():
            raise OutsideTransactionError(
                "the outbox writer needs an open transaction, and this Connection has none: "
                "publish inside `with engine.begin() as connection:` or after "
                "`connection.begin()`, and commit it yourself; the writer never commits"
            )
        connection, kind = target, "Connection"
    else:
        raise TypeError(
            f"write() takes a SQLAlchemy Session or Connection, not {type(target).__name__}"
        )
    if _is_autocommit(connection):
        raise OutsideTransactionError(
            f"the {kind} runs in AUTOCOMMIT isolation, so outbox rows would commit on their own, "
            "apart from the business write; publish on a connection without "
            "isolation_level='AUTOCOMMIT' (e.g. engine.begin() on the default engine)"
        )
    return connection


def write(
    target: Session | Connection | scoped_session[Session],
    records: Sequence[EncodedEvent],
    modes: Mode | Sequence[Mode],
    *,
    strategy: WriteStrategy = WriteStrategy.IMMEDIATE,
) -> None:
    """Insert ``records`` into the outbox inside ``target``'s open transaction; never commit.

    ``modes`` is one Mode for all records or one per record. Raises OutsideTransactionError
    (before touching the database) when ``target`` has no open transaction or autocommits.
    With ``strategy=AT_COMMIT`` on psycopg 3 the INSERT waits for the commit (module docstring);
    the checks and the rows are done here all the same. Thread safety is the caller's
    Session/Connection's: use it from one thread at a time.
    """
    connection = _joined_connection(target)
    if not records:
        return
    rows = _rows(records, modes)
    if strategy == WriteStrategy.AT_COMMIT and supported(connection):
        defer_until_commit(connection, rows, _DEFERRED)
        return
    for sql, parameters in statements_for(connection.dialect, rows):
        connection.exec_driver_sql(sql, parameters)


async def write_async(
    target: AsyncSession | AsyncConnection,
    records: Sequence[EncodedEvent],
    modes: Mode | Sequence[Mode],
    *,
    strategy: WriteStrategy = WriteStrategy.IMMEDIATE,
) -> None:
    """``write`` for an AsyncSession/AsyncConnection (through ``run_sync``: same rows, same checks)."""
    await target.run_sync(write, records, modes, strategy=strategy)
