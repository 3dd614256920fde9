"""Routing flags: the effective mode of every context, switchable at runtime without a restart.

Sources, lowest to highest precedence: the default (``Mode.LOCAL``), settings
(``EventSeamSettings.contexts``) and the flag table ``eventseam_flags``, which operators change
with ``eventseam flags set CONTEXT MODE`` (or ``FlagSource.set_mode``).

``FlagSource.mode_of`` answers from an in-memory snapshot: it never blocks and never touches the
database. The snapshot is re-read from the table at most every ``settings.flag_refresh_seconds``:

- web processes call ``refresh(connection)`` at a transaction boundary, when a publish starts,
  then ``mode_of``: a flip takes effect for transactions that start after the next refresh;
- relays and workers run ``FlagSource.run`` as a task (``await task_group.start(flags.run)``).

A table row naming an unknown context or mode is logged once and ignored; it never crashes a
reader. Writes are validated: UnknownContextError for a context the application does not
declare, SettingsError for a mode that does not exist.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import structlog
from sqlalchemy import Engine, delete, insert, inspect, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from outbox.errors import SchemaMissingError
from outbox.flag_table import flags as flag_table

from .contexts import ContextMap
from .errors import SettingsError, UnknownContextError
from .modes import Mode

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from anyio.abc import TaskStatus
    from sqlalchemy import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

    from .settings import EventSeamSettings

_log = structlog.get_logger(__name__)
_T = TypeVar("_T")


class FlagOrigin(StrEnum):
    """Which source decided a context's effective mode."""

    DEFAULT = "default"
    SETTINGS = "settings"
    TABLE = "table"


@dataclass(frozen=True, slots=True)
class FlagRow:
    """One row of ``eventseam_flags`` (``updated_at`` in UTC)."""

    context: str
    mode: Mode
    updated_at: datetime | None
    updated_by: str | None


@dataclass(frozen=True, slots=True)
class FlagState:
    """A context's effective mode and where it comes from, as ``eventseam flags show`` lists it.

    ``known`` is False for a table row naming a context the application does not declare (such
    a row is ignored by ``mode_of``).
    """

    context: str
    mode: Mode
    origin: FlagOrigin
    updated_at: datetime | None = None
    updated_by: str | None = None
    known: bool = True


RawFlag = tuple[str, str, datetime | None, str | None]
"""A flag-table row as read, before validation: context, mode, updated_at (UTC), updated_by."""


@dataclass(frozen=True, slots=True)
class _Snapshot:
    rows: dict[str, FlagRow]  # valid table rows of known contexts
    effective: dict[str, Mode]  # settings overlaid with rows
    read_started: float  # clock() when the read that produced it began


def parse_mode(value: Mode | str) -> Mode:
    """``value`` as a Mode (case-insensitive); SettingsError when no such mode exists."""
    if isinstance(value, Mode):
        return value
    try:
        return Mode(value.strip().lower())
    except ValueError:
        choices = ", ".join(mode.value for mode in Mode)
        raise SettingsError(f"unknown mode {value!r}; expected one of: {choices}") from None


def read_flags(target: Connection | Session) -> list[RawFlag]:
    """Every row of the flag table, raw (unvalidated), ordered by context."""
    connection = target.connection() if isinstance(target, Session) else target
    query = select(
        flag_table.c.context, flag_table.c.mode, flag_table.c.updated_at, flag_table.c.updated_by
    ).order_by(flag_table.c.context)
    return [(row[0], row[1], _utc(row[2]), row[3]) for row in connection.execute(query)]


class FlagSource:
    """The effective routing mode of every context: defaults < settings < flag table.

    ``mode_of`` is safe to call from any thread and never blocks. ``refresh`` and ``run`` re-read
    the table; ``clock`` (monotonic seconds) and ``sleep`` are injectable so tests drive time.
    ``engine`` is what ``run`` reads through (sync engines are read in a worker thread).
    Settings naming a context the application does not declare raise SettingsError here.
    """

    def __init__(
        self,
        settings: EventSeamSettings,
        contexts: ContextMap | Iterable[str],
        *,
        engine: Engine | AsyncEngine | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = anyio.sleep,
    ) -> None:
        self._known = tuple(contexts.names() if isinstance(contexts, ContextMap) else contexts)
        unknown = sorted(set(settings.contexts) - set(self._known))
        if unknown:
            raise SettingsError(
                f"settings set a mode for unknown context(s) {', '.join(unknown)}; "
                f"known contexts: {', '.join(self._known) or 'none'}"
            )
        self._settings: dict[str, Mode] = dict(settings.contexts)
        self.interval = settings.flag_refresh_seconds
        self._engine = engine
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._reported: set[tuple[str, str]] = set()
        self._orphans: list[FlagState] = []
        self._snapshot = _Snapshot({}, dict(self._settings), read_started=float("-inf"))
        self._loaded = self._ever_loaded = False

    @property
    def contexts(self) -> tuple[str, ...]:
        """The context names the application declares."""
        return self._known

    @property
    def has_engine(self) -> bool:
        """True when ``run`` can re-read the flag table (an engine was given)."""
        return self._engine is not None

    @property
    def stale(self) -> bool:
        """True when the snapshot was never read or is older than the refresh interval."""
        return not self._loaded or self._clock() - self._snapshot.read_started >= self.interval

    def mode_of(self, context: str) -> Mode:
        """The effective mode of ``context`` from the snapshot (never blocks, never raises)."""
        return self._snapshot.effective.get(context, Mode.LOCAL)

    def states(self) -> list[FlagState]:
        """Effective mode and origin of every declared context, then ignored (orphan) rows."""
        rows = self._snapshot.rows
        result = []
        for context in self._known:
            if context in rows:
                row = rows[context]
                state = FlagState(
                    context, row.mode, FlagOrigin.TABLE, row.updated_at, row.updated_by
                )
            elif context in self._settings:
                state = FlagState(context, self._settings[context], FlagOrigin.SETTINGS)
            else:
                state = FlagState(context, Mode.LOCAL, FlagOrigin.DEFAULT)
            result.append(state)
        return result + list(self._orphans)

    def refresh(self, target: Connection | Session, *, force: bool = False) -> bool:
        """Re-read the table on the caller's connection when the snapshot is stale (or ``force``).

        Call it at a transaction boundary, before ``mode_of``. Returns True when it read the
        table. Database errors propagate (a missing table means migrations were not run).
        """
        if not force and not self.stale:
            return False
        started = self._clock()
        self._install(read_flags(target), started)
        return True

    async def refresh_async(
        self, target: AsyncConnection | AsyncSession, *, force: bool = False
    ) -> bool:
        """``refresh`` on an AsyncConnection or AsyncSession (through ``run_sync``)."""
        if not force and not self.stale:
            return False
        return await target.run_sync(self.refresh, force=True)

    async def load(self) -> None:
        """Read the flag table now through ``engine``.

        Raises SchemaMissingError when the table does not exist (migrations were not run), the
        database's error otherwise.
        """
        try:
            await self._refresh_via_engine()
        except SQLAlchemyError as exc:
            if not await self._through_engine(_has_flag_table):
                raise SchemaMissingError(_database(self._engine), flag_table.name) from exc
            raise

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Refresh through ``engine`` every interval until cancelled.

        Unless the table was read already (``load``, ``refresh``), the first read (``load``)
        happens before ``task_status.started()``, so its failure fails the start; later
        failures are logged and the last snapshot is kept.
        """
        if not self._ever_loaded:
            await self.load()
        task_status.started()
        while True:
            await self._sleep(self.interval)
            try:
                await self._refresh_via_engine()
            except SQLAlchemyError as exc:
                _log.warning("flags.refresh_failed", error=str(exc))

    def validate(self, context: str, mode: Mode | str) -> Mode:
        """``mode`` as a Mode for a declared ``context``; UnknownContextError or SettingsError otherwise."""
        self.check_context(context)
        return parse_mode(mode)

    def set_mode(
        self, target: Connection | Session, context: str, mode: Mode | str, *, by: str
    ) -> Mode:
        """Upsert the table row of ``context`` in the caller's transaction (never commits).

        Raises UnknownContextError for an undeclared context and SettingsError for an unknown
        mode. Other processes see it within one refresh interval after the commit; this source
        reads it at its next ``refresh``.
        """
        chosen = self.validate(context, mode)
        connection = target.connection() if isinstance(target, Session) else target
        values = {"mode": chosen.value, "updated_at": datetime.now(UTC), "updated_by": by}
        _upsert(connection, context, values)
        self._loaded = False
        return chosen

    def clear_mode(self, target: Connection | Session, context: str) -> bool:
        """Delete the table row of ``context`` (back to settings or the default); True if one existed."""
        self.check_context(context)
        connection = target.connection() if isinstance(target, Session) else target
        deleted = connection.execute(
            delete(flag_table).where(flag_table.c.context == context)
        ).rowcount
        self._loaded = False
        return deleted > 0

    def check_context(self, context: str) -> None:
        """Raise UnknownContextError unless the application declares ``context``."""
        if context not in self._known:
            raise UnknownContextError(context, sorted(self._known))

    async def _refresh_via_engine(self) -> None:
        await self._through_engine(functools.partial(self.refresh, force=True))

    async def _through_engine(self, read: Callable[[Connection], _T]) -> _T:
        """``read`` on a connection of ``engine`` (a sync engine's in a worker thread)."""
        engine = self._engine
        if engine is None:
            raise SettingsError("FlagSource.run needs an engine: FlagSource(..., engine=...)")
        if isinstance(engine, Engine):
            return await anyio.to_thread.run_sync(_on_connection, engine, read)
        async with engine.connect() as connection:
            return await connection.run_sync(read)

    def _install(self, raw: list[RawFlag], started: float) -> None:
        rows: dict[str, FlagRow] = {}
        orphans: list[FlagState] = []
        for context, value, updated_at, updated_by in raw:
            try:
                mode = parse_mode(value)
            except SettingsError:
                self._report(context, value, "eventseam.flags.unknown_mode")
                continue
            if context not in self._known:
                self._report(context, value, "eventseam.flags.unknown_context")
                orphans.append(
                    FlagState(context, mode, FlagOrigin.TABLE, updated_at, updated_by, known=False)
                )
                continue
            rows[context] = FlagRow(context, mode, updated_at, updated_by)
        with self._lock:
            if started < self._snapshot.read_started:
                return  # a later read already won
            previous = self._snapshot.effective if self._ever_loaded else None
            effective = {**self._settings, **{name: row.mode for name, row in rows.items()}}
            self._snapshot = _Snapshot(rows, effective, started)
            self._orphans = orphans
            self._loaded = self._ever_loaded = True
        if previous is None:
            return  # the first read sets the baseline; later reads report flips
        for context in sorted(previous.keys() | effective.keys()):
            before, after = previous.get(context, Mode.LOCAL), effective.get(context, Mode.LOCAL)
            if before is not after:
                _log.info(
                    "flags.changed",
                    context=context,
                    before=before.value,
                    mode=after.value,
                )

    def _report(self, context: str, value: str, event: str) -> None:
        """Warn once per (context, mode) about a table row that is ignored."""
        if (context, value) in self._reported:
            return
        self._reported.add((context, value))
        _log.warning(event, context=context, mode=value, known_contexts=list(self._known))


def _on_connection(engine: Engine, read: Callable[[Connection], _T]) -> _T:
    with engine.connect() as connection:
        return read(connection)


def _has_flag_table(connection: Connection) -> bool:
    return inspect(connection).has_table(flag_table.name)


def _database(engine: Engine | AsyncEngine | None) -> str:
    """``engine``'s URL with its password hidden."""
    return "<no engine>" if engine is None else engine.url.render_as_string(hide_password=True)


def _upsert(connection: Connection, context: str, values: dict[str, Any]) -> None:
    """INSERT ... ON CONFLICT (context) DO UPDATE on PostgreSQL and SQLite; update-then-insert elsewhere."""
    dialect = connection.dialect.name
    if dialect in {"postgresql", "sqlite"}:
        dml = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = dml(flag_table).values(context=context, **values)
        connection.execute(
            statement.on_conflict_do_update(index_elements=[flag_table.c.context], set_=values)
        )
        return
    updated = connection.execute(
        update(flag_table).where(flag_table.c.context == context).values(values)
    )
    if updated.rowcount == 0:
        connection.execute(insert(flag_table).values(context=context, **values))


def _utc(moment: datetime | None) -> datetime | None:
    """Timestamps in UTC; SQLite returns naive values that are UTC already."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
