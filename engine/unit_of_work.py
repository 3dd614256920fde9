"""Transaction scoping: events wait for the caller's commit; a UnitOfWork owns one transaction.

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
  when held events are delivered. A COMMIT that fails after that point (deferred constraint,
  serialization failure, lost connection) has already dispatched them; use a Session where that
  matters.

Listeners are module functions registered once per Session / Connection object (never per
transaction, so a long-lived session does not accumulate them); SQLAlchemy releases them with
the object. ``deliver`` must not raise: it runs after the database committed.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeAlias

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from sqlalchemy import Connection, NestedTransaction

    from .events import DomainEvent

    Deliver: TypeAlias = Callable[[list[DomainEvent]], None]
    """Hands committed events on for dispatch; must not raise (the database already committed)."""

_SESSION_KEY = "eventseam.held"
_RELEASED = object()
"""Scope of connection entries whose savepoint was released (re-scoped at the next event)."""


@dataclass(slots=True)
class _Held:
    """Events of one publish call, the transaction they belong to and where they go on commit."""

    scope: object
    events: list[DomainEvent]
    deliver: Deliver


def hold_until_commit(
    target: Session | Connection,
    events: Sequence[DomainEvent],
    deliver: Deliver,
) -> None:
    """Call ``deliver(list(events))`` after ``target``'s transaction commits; never on rollback."""
    if isinstance(target, Session):
        _session_held(target).append(_Held(_session_scope(target), list(events), deliver))
    else:
        _connection_held(target).append(_Held(_connection_scope(target), list(events), deliver))


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

_connections: weakref.WeakKeyDictionary[Connection, list[_Held]] = weakref.WeakKeyDictionary()
_connections_lock = threading.Lock()


def _connection_scope(connection: Connection) -> NestedTransaction | None:
    return connection.get_nested_transaction()


def _connection_held(connection: Connection) -> list[_Held]:
    with _connections_lock:
        held = _connections.get(connection)
        if held is None:
            held = _connections[connection] = []
            event.listen(connection, "savepoint", _connection_savepoint)
            event.listen(connection, "release_savepoint", _connection_release_savepoint)
            event.listen(connection, "rollback_savepoint", _connection_rollback_savepoint)
            event.listen(connection, "commit", _connection_commit)
            event.listen(connection, "rollback", _connection_rollback)
    _settle(connection, held)
    return held


def _settle(connection: Connection, held: Iterable[_Held]) -> None:
    """Move entries of a released savepoint into the transaction now current (its parent).

    Every connection event settles first; SQLAlchemy fires them while the savepoint concerned is
    still current (and ``savepoint`` before the new one becomes current), so the current nested
    transaction at that moment is the released savepoint's parent.
    """
    released = [entry for entry in held if entry.scope is _RELEASED]
    if released:
        scope = _connection_scope(connection)
        for entry in released:
            entry.scope = scope


def _connection_savepoint(connection: Connection, name: str | None) -> None:
    _settle(connection, _connections.get(connection, ()))


def _connection_release_savepoint(connection: Connection, name: str, context: object) -> None:
    held = _connections.get(connection, [])
    _settle(connection, held)
    current = _connection_scope(connection)
    for entry in held:
        if entry.scope is current:
            entry.scope = _RELEASED


def _connection_rollback_savepoint(connection: Connection, name: str, context: object) -> None:
    held = _connections.get(connection, [])
    _settle(connection, held)
    current = _connection_scope(connection)
    held[:] = [entry for entry in held if entry.scope is not current]


def _connection_commit(connection: Connection) -> None:
    held = _connections.get(connection, [])
    entries = held[:]
    held.clear()
    _deliver_all(entries)


def _connection_rollback(connection: Connection) -> None:
    _connections.get(connection, []).clear()


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
