"""Transaction scoping: work waits for the caller's commit; a UnitOfWork owns one transaction.

``hold_until_commit(target, events, deliver)`` keeps published events next to the caller's
transaction and calls ``deliver(events)`` once it commits:

* ``Session`` (and ``AsyncSession.sync_session``): session events. An event is held in the
  innermost transaction open when it was published (a SAVEPOINT from ``begin_nested`` or the
  root). ``after_soft_rollback`` drops what was held in the rolled-back transaction and in the
  savepoints inside it; a released savepoint keeps its events for the outer transaction;
  ``after_commit`` of the root delivers everything left; the end of the root transaction
  (commit, rollback or close) forgets whatever is still held.
* ``Connection`` (and ``AsyncConnection.sync_connection``): connection events. SAVEPOINT
  rollbacks and releases are tracked the same way; a root ``rollback`` drops everything. Core has
  no after-commit event: the ``commit`` event fires just before the DBAPI ``COMMIT``, so that is
  when held events are delivered (after any deferred write, see below; when a deferred writer
  sent the COMMIT itself, that is after the database committed). A COMMIT that fails after that
  point (deferred constraint, serialization failure, lost connection) has already dispatched
  them; use a Session where that matters.

``defer_until_commit(connection, batch, writer)`` keeps a batch of work that must reach the
database before the transaction ends (the outbox writer's deferred rows) with the same SAVEPOINT
scoping as held events: a rolled-back SAVEPOINT drops its batches, a released one hands them to
its parent, a root rollback drops them all. ``writer.flush(connection, batches, commit=...)``
receives the surviving batches in publish order:

* before any statement for which ``writer.must_precede(statement, context)`` is true (one that
  could read them), with ``commit=False``: the batches are written there and then;
* at the root commit (the ``commit`` event, before the DBAPI COMMIT) with ``commit=True``: the
  writer may send the COMMIT itself in the same network flight, SQLAlchemy's own COMMIT then
  finding nothing left to commit. When it raises, the commit fails (the caller rolls back) and
  no event held on that connection is delivered.

Connection listeners are module functions registered once per ``Engine`` (the connection's
``engine``), the first time one of its connections holds something: registering them per
``Connection`` cost about 12 us per listener, and a Session or ``engine.begin()`` uses a new
Connection for every transaction. SQLAlchemy does not make listener registration safe against
statements running at that moment in other threads of the same engine; the registration happens
once per engine, at its first publish. Session listeners are registered once per Session object
(never per transaction); SQLAlchemy releases them with the object. ``deliver`` must not raise: it
runs after the database committed.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from sqlalchemy import Connection, Engine, NestedTransaction
    from sqlalchemy.engine.interfaces import DBAPICursor, ExecutionContext

    from .events import DomainEvent

    Deliver: TypeAlias = Callable[[list[DomainEvent]], None]
    """Hands committed events on for dispatch; must not raise (the database already committed)."""

_SESSION_KEY = "eventseam.held"
_RELEASED = object()
"""Scope of connection entries whose savepoint was released (re-scoped at the next event)."""


class _Scoped(Protocol):
    scope: object


_S = TypeVar("_S", bound=_Scoped)


@dataclass(slots=True)
class _Held:
    """Events of one publish call, the transaction they belong to and where they go on commit."""

    scope: object
    events: list[DomainEvent]
    deliver: Deliver


@dataclass(slots=True)
class _Deferred:
    """One batch of deferred work (for example outbox rows) and the transaction it belongs to."""

    scope: object
    batch: Any


class DeferredWriter(Protocol):
    """Writes deferred batches (see ``defer_until_commit``); one writer per connection."""

    def must_precede(self, statement: str, context: ExecutionContext | None) -> bool:
        """True when the held batches must be written before ``statement`` runs."""
        ...

    def flush(self, connection: Connection, batches: list[Any], *, commit: bool) -> None:
        """Write ``batches`` (publish order) on ``connection``; with ``commit``, it may COMMIT too."""
        ...


def hold_until_commit(
    target: Session | Connection,
    events: Sequence[DomainEvent],
    deliver: Deliver,
) -> None:
    """Call ``deliver(list(events))`` after ``target``'s transaction commits; never on rollback."""
    if isinstance(target, Session):
        _session_held(target).append(_Held(_session_scope(target), list(events), deliver))
    else:
        state = _connection_state(target)
        state.held.append(_Held(_connection_scope(target), list(events), deliver))


def defer_until_commit(connection: Connection, batch: object, writer: DeferredWriter) -> None:
    """Keep ``batch`` with ``connection``'s transaction until ``writer`` writes it (see above).

    The connection must be inside a transaction (the caller checks); a rolled-back transaction
    or SAVEPOINT drops the batch unwritten.
    """
    state = _connection_state(connection)
    if state.writer is not None and state.writer is not writer:
        raise ValueError("a connection's deferred batches must all go through one writer")
    state.writer = writer
    state.deferred.append(_Deferred(_connection_scope(connection), batch))


def _deliver_all(held: list[_Held]) -> None:
    """Deliver held events in publish order, one call per run of the same destination."""
    batch: list[DomainEvent] = []
    current: Deliver | None = None
    for entry in held:
        if current is not None and entry.deliver is not current:
            current(batch)
            batch = []
        current = entry.deliver
        batch.extend(entry.events)
    if current is not None and batch:
        current(batch)


# -- Session ------------------------------------------------------------------------------


def _session_scope(session: Session) -> SessionTransaction | None:
    return session.get_nested_transaction() or session.get_transaction()


def _session_held(session: Session) -> list[_Held]:
    held: list[_Held] | None = session.info.get(_SESSION_KEY)
    if held is None:
        held = session.info[_SESSION_KEY] = []
        event.listen(session, "after_commit", _session_after_commit)
        event.listen(session, "after_soft_rollback", _session_after_soft_rollback)
        event.listen(session, "after_transaction_end", _session_after_transaction_end)
    return held


def _session_after_commit(session: Session) -> None:
    if session.get_nested_transaction() is not None:
        return  # a SAVEPOINT was released: its events wait for the root commit
    held: list[_Held] = session.info.get(_SESSION_KEY, [])
    entries = held[:]
    held.clear()
    _deliver_all(entries)


def _session_after_soft_rollback(session: Session, previous: SessionTransaction) -> None:
    held: list[_Held] = session.info.get(_SESSION_KEY, [])
    held[:] = [entry for entry in held if not _inside(entry.scope, previous)]


def _inside(scope: object, transaction: SessionTransaction) -> bool:
    """True when ``scope`` is ``transaction`` or a transaction nested inside it."""
    current = scope if isinstance(scope, SessionTransaction) else None
    while current is not None:
        if current is transaction:
            return True
        current = current.parent
    return False


def _session_after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        held: list[_Held] = session.info.get(_SESSION_KEY, [])
        held.clear()


# -- Connection ---------------------------------------------------------------------------


@dataclass(slots=True)
class _ConnectionState:
    """What one Connection's current root transaction holds: events and deferred batches."""

    root: object
    held: list[_Held] = field(default_factory=list)
    deferred: list[_Deferred] = field(default_factory=list)
    writer: DeferredWriter | None = None

    def entries(self) -> Iterable[_Scoped]:
        yield from self.held
        yield from self.deferred


_states: weakref.WeakKeyDictionary[Connection, _ConnectionState] = weakref.WeakKeyDictionary()
_engines: weakref.WeakSet[Engine] = weakref.WeakSet()
_lock = threading.Lock()


def _connection_scope(connection: Connection) -> NestedTransaction | None:
    return connection.get_nested_transaction()


def _connection_state(connection: Connection) -> _ConnectionState:
    """The state of ``connection``'s current root transaction (a new one for a new transaction)."""
    _listen_once(connection.engine)
    root = connection.get_transaction()
    state = _states.get(connection)
    if state is None or state.root is not root:
        with _lock:
            state = _states[connection] = _ConnectionState(root)
    _settle(connection, state)
    return state


def _listen_once(engine: Engine) -> None:
    """Register the connection listeners on ``engine`` (once; see the module docstring).

    An engine made by ``execution_options()`` may end up with the listeners of its parent too;
    every listener is idempotent, so a second call finds nothing left to do.
    """
    if engine in _engines:
        return
    with _lock:
        if engine in _engines:
            return
        event.listen(engine, "savepoint", _connection_savepoint)
        event.listen(engine, "release_savepoint", _connection_release_savepoint)
        event.listen(engine, "rollback_savepoint", _connection_rollback_savepoint)
        event.listen(engine, "commit", _connection_commit)
        event.listen(engine, "rollback", _connection_rollback)
        event.listen(engine, "before_cursor_execute", _connection_before_cursor_execute)
        _engines.add(engine)


def _settle(connection: Connection, state: _ConnectionState) -> None:
    """Move entries of a released savepoint into the transaction now current (its parent).

    Every connection event settles first; SQLAlchemy fires them while the savepoint concerned is
    still current (and ``savepoint`` before the new one becomes current), so the current nested
    transaction at that moment is the released savepoint's parent.
    """
    scope: object = None
    found = False
    for entry in state.entries():
        if entry.scope is _RELEASED:
            if not found:
                scope, found = _connection_scope(connection), True
            entry.scope = scope


def _without_scope(entries: list[_S], scope: object) -> list[_S]:
    return [entry for entry in entries if entry.scope is not scope]


def _connection_savepoint(connection: Connection, name: str | None) -> None:
    state = _states.get(connection)
    if state is not None:
        _settle(connection, state)


def _connection_release_savepoint(connection: Connection, name: str, context: object) -> None:
    state = _states.get(connection)
    if state is None:
        return
    _settle(connection, state)
    current = _connection_scope(connection)
    for entry in state.entries():
        if entry.scope is current:
            entry.scope = _RELEASED


def _connection_rollback_savepoint(connection: Connection, name: str, context: object) -> None:
    state = _states.get(connection)
    if state is None:
        return
    _settle(connection, state)
    current = _connection_scope(connection)
    state.held[:] = _without_scope(state.held, current)
    state.deferred[:] = _without_scope(state.deferred, current)


def _connection_commit(connection: Connection) -> None:
    with _lock:
        state = _states.pop(connection, None)
    if state is None or state.root is not connection.get_transaction():
        return
    if state.deferred and state.writer is not None:
        # Raises when the write (or the COMMIT sent with it) fails: the commit fails, nothing
        # is delivered, and the caller's rollback finds the state already gone.
        state.writer.flush(connection, [entry.batch for entry in state.deferred], commit=True)
    _deliver_all(state.held)


def _connection_rollback(connection: Connection) -> None:
    with _lock:
        _states.pop(connection, None)


def _connection_before_cursor_execute(
    connection: Connection,
    cursor: DBAPICursor,
    statement: str,
    parameters: object,
    context: ExecutionContext | None,
    executemany: bool,
) -> None:
    state = _states.get(connection)
    if state is None or not state.deferred or state.writer is None:
        return
    if not state.writer.must_precede(statement, context):
        return
    batches = [entry.batch for entry in state.deferred]
    state.deferred.clear()
    state.writer.flush(connection, batches, commit=False)


# -- UnitOfWork ---------------------------------------------------------------------------


class PublishOn(Protocol):
    """``EventSeam.publish``: write events to a session's transaction, dispatch after commit."""

    def __call__(
        self, target: Session, /, *events: DomainEvent, context: str | None = None
    ) -> None: ...


class UnitOfWork:
    """One business transaction on its own Session (see ``EventSeam.transaction``).

    ``session`` is the transaction's Session; ``publish`` writes events to the outbox in it. The
    transaction commits when the block exits (events are dispatched after that commit) and
    rolls back when it raises (nothing is dispatched). Not thread safe: one thread at a time.
    """

    __slots__ = ("_publish", "session")

    def __init__(self, session: Session, publish: PublishOn) -> None:
        self.session = session
        self._publish = publish

    def publish(self, *events: DomainEvent, context: str | None = None) -> None:
        """Write ``events`` to this transaction's outbox; they are dispatched after it commits."""
        self._publish(self.session, *events, context=context)
