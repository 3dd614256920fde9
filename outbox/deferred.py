"""Deferred outbox writes on psycopg 3: rows travel in one network flight with the COMMIT.

``outbox.writer.write(..., strategy=WriteStrategy.AT_COMMIT)`` checks the transaction and builds
the rows at publish time (every error that can be raised then is raised then), then hands them to
``engine.unit_of_work.defer_until_commit`` instead of executing an INSERT. The writer's
``PsycopgDeferredWriter`` writes them:

* at the root commit (the Connection's ``commit`` event, which fires for a Session's commit
  too): the INSERT(s) and a ``COMMIT`` go out in psycopg pipeline mode and are answered by one
  Sync, so the outbox costs no round trip of its own. SQLAlchemy's DBAPI ``commit()`` that
  follows finds the transaction already committed (psycopg skips it: the connection is idle).
  When the INSERT fails, PostgreSQL skips the COMMIT (the pipeline is aborted), the writer
  rolls the transaction back (SQLAlchemy sends no ROLLBACK after a failed commit) and the error
  is raised from the commit as the matching ``sqlalchemy.exc.DBAPIError`` (``IntegrityError``,
  ...), with a note saying where it came from: neither the business rows nor the events are
  committed, and the connection is ready for its next transaction. psycopg logs "error ignored
  terminating <Pipeline>" (WARNING, logger ``psycopg``) when that happens.
* earlier, with a plain INSERT, before any statement of the same transaction that could read
  them (``must_precede``): every statement except the ``SAVEPOINT`` family and compiled
  INSERT/UPDATE/DELETE statements that do not name the outbox table. Reading the outbox in the
  transaction after publishing therefore sees the rows, as with an immediate write. Not covered:
  a view, function or trigger that reads the outbox from a DML statement on another table, and
  SQL sent on the raw DBAPI connection (both see the rows only once they are written).

A rolled-back SAVEPOINT or transaction drops its rows unwritten (engine.unit_of_work scoping).
Rows written this way go through the driver's cursor, not SQLAlchemy's ``execute``: engine events
(``before_cursor_execute``), echo logging and SQLAlchemy's statement cache do not see them.
Works for sync psycopg and, inside SQLAlchemy's greenlet, for psycopg's AsyncConnection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, TypeAlias

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import TwoPhaseTransaction
from sqlalchemy.sql.expression import (
    ReleaseSavepointClause,
    RollbackToSavepointClause,
    SavepointClause,
)
from sqlalchemy.util import await_only

from .table import outbox

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sqlalchemy import Connection
    from sqlalchemy.engine import Dialect
    from sqlalchemy.engine.interfaces import ExecutionContext

#: Execution option that picks the write strategy of an engine or connection:
#: ``"immediate"`` turns the deferred (AT_COMMIT) strategy off for it.
WRITE_OPTION: Final = "eventseam_outbox_write"

_SAVEPOINT_CLAUSES: Final = (SavepointClause, ReleaseSavepointClause, RollbackToSavepointClause)
_TABLE: Final = outbox.name
_COMMIT: Final = b"COMMIT"
_NOTE: Final = (
    "eventseam: this error comes from outbox rows whose INSERT was deferred to {when} "
    "(outbox.writer.WriteStrategy.AT_COMMIT); the transaction was not committed{then}"
)

#: One statement to run: (SQL, DBAPI parameters).
Statement: TypeAlias = tuple[str, Any]
#: Turns rows (COLUMNS order) into the INSERT statements that write them, for a dialect.
StatementsFor: TypeAlias = "Callable[[Dialect, list[tuple[Any, ...]]], list[Statement]]"


class PsycopgDeferredWriter:
    """Writes deferred outbox rows on a psycopg 3 connection (engine.unit_of_work.DeferredWriter).

    Stateless apart from ``statements_for`` (the writer's INSERT builder); the writer's single
    instance serves every connection and thread.
    """

    __slots__ = ("_statements_for",)

    def __init__(self, statements_for: StatementsFor) -> None:
        self._statements_for = statements_for

    def must_precede(self, statement: str, context: ExecutionContext | None) -> bool:
        """True unless ``statement`` cannot read the outbox: a SAVEPOINT statement, or DML elsewhere."""
        compiled = context.compiled if context is not None else None
        if compiled is None:
            return True  # SQL text sent as is: it may read anything
        if isinstance(compiled.statement, _SAVEPOINT_CLAUSES):
            return False  # savepoint scoping is engine.unit_of_work's
        if context is not None and (
            context.isinsert or context.isupdate or getattr(context, "isdelete", False)
        ):
            return _TABLE in statement
        return True

    def flush(self, connection: Connection, batches: list[Any], *, commit: bool) -> None:
        """INSERT the rows of ``batches`` (publish order); with ``commit``, COMMIT in the same flight."""
        rows = [row for batch in batches for row in batch]
        statements = self._statements_for(connection.dialect, rows)
        driver = connection.connection.driver_connection
        try:
            if connection.dialect.is_async:
                await_only(_send_async(driver, statements, commit))
            else:
                _send(driver, statements, commit)
        except connection.dialect.loaded_dbapi.Error as error:
            raise _translated(error, statements, connection, commit) from error


def supported(connection: Connection) -> bool:
    """True when rows for ``connection`` are deferred: psycopg 3, one-phase, and opted in.

    Opt in per engine or connection with the execution option
    ``eventseam_outbox_write="at_commit"`` (``create_engine(url, execution_options={...})``).
    Off by default: on loopback it measured no faster than the immediate INSERT (the pipeline's
    own cost eats the round trip it saves) and it moves INSERT errors to the commit; it is
    meant for databases reached over a real network, where it saves a round trip per commit.
    """
    dialect = connection.dialect
    if dialect.name != "postgresql" or dialect.driver != "psycopg":
        return False
    if connection.get_execution_options().get(WRITE_OPTION, "immediate") != "at_commit":
        return False
    root = connection.get_transaction()
    return root is not None and not isinstance(root, TwoPhaseTransaction)


def _send(driver: Any, statements: Sequence[Statement], commit: bool) -> None:
    """Run ``statements`` on a sync psycopg connection; with ``commit``, pipelined with COMMIT.

    When the commit flight fails, the transaction is rolled back here: SQLAlchemy treats a
    failed commit as the end of the transaction and sends no ROLLBACK of its own, while a failed
    INSERT leaves PostgreSQL's transaction open (aborted: the COMMIT after it was skipped).
    """
    if not commit:
        with driver.cursor() as cursor:
            for sql, parameters in statements:
                cursor.execute(sql, parameters)
        return
    try:
        # psycopg's own commit() would Sync on its own (a second round trip): COMMIT is sent as
        # a statement instead, so the INSERTs, the COMMIT and one Sync share a single flight.
        with driver.pipeline(), driver.cursor() as cursor:
            for sql, parameters in statements:
                cursor.execute(sql, parameters)
            cursor.execute(_COMMIT, prepare=False)
    except BaseException:
        if not driver.closed:
            driver.rollback()
        raise


async def _send_async(driver: Any, statements: Sequence[Statement], commit: bool) -> None:
    """``_send`` for psycopg's AsyncConnection (awaited inside SQLAlchemy's greenlet)."""
    if not commit:
        async with driver.cursor() as cursor:
            for sql, parameters in statements:
                await cursor.execute(sql, parameters)
        return
    try:
        async with driver.pipeline(), driver.cursor() as cursor:
            for sql, parameters in statements:
                await cursor.execute(sql, parameters)
            await cursor.execute(_COMMIT, prepare=False)
    except BaseException:
        if not driver.closed:
            await driver.rollback()
        raise


def _translated(
    error: Exception, statements: Sequence[Statement], connection: Connection, commit: bool
) -> sa_exc.StatementError:
    """``error`` as SQLAlchemy would raise it (IntegrityError, ...), with a note on its origin."""
    sql = statements[0][0] if statements else ""
    translated = sa_exc.DBAPIError.instance(
        sql,
        None,
        error,
        connection.dialect.loaded_dbapi.Error,
        hide_parameters=True,  # event payloads stay out of logs and tracebacks
        dialect=connection.dialect,
    )
    if commit:
        translated.add_note(_NOTE.format(when="the COMMIT", then=" and was rolled back"))
    else:
        translated.add_note(_NOTE.format(when="the next statement", then=": roll it back"))
    return translated
