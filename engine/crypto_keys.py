"""Per-subject keys in the key table (outbox/key_table.py): current keys, lookup, rotation, erasure.

Contract:

- ``SubjectKeys.current`` gives each subject's newest key, creating version 1 (or the version
  after a shredded one) when it has none. It runs on the caller's connection, inside the
  caller's transaction (the publish transaction): a rolled-back publish leaves no key behind.
  Concurrent first publishes for one subject insert with ON CONFLICT DO NOTHING and read back
  the winner's key (PostgreSQL and SQLite).
- ``SubjectKeys.lookup`` gives the keys of (subject, version) pairs; None for a version that
  was shredded or never existed: the value is erased.
- ``rotate`` adds the next version; older versions stay until shredded, so values sealed
  before a rotation still open.
- ``erase_subject`` (crypto-shredding) needs no master key: it blanks every key version of the
  subject. Every value sealed for the subject becomes ``Erased``; the subject's next publish
  gets a new key with the next version.
- Nothing is cached: an erasure in one process is seen by the next lookup in every process.
- ``current`` and ``lookup`` build SQLAlchemy Core statements and run them through a
  ``KeyExecutor``: a SQLAlchemy ``Connection`` (wrapped in ``ConnectionExecutor``) or any other
  runner of the caller's transaction, such as the Django integration's cursor executor
  (engine.integrations.django.cursor_sql), so every publish path shares one key logic.

``erase_subject`` and ``key_versions`` work without the ``cryptography`` package.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, and_, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from outbox.key_table import subject_keys

from .errors import PersonalDataError

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping, Sequence

    from sqlalchemy import Insert, Select
    from sqlalchemy.engine import Dialect

    from .crypto import MasterKey
    from .settings import PersonalDataSettings

__all__ = ["ConnectionExecutor", "KeyExecutor", "SubjectKeys", "erase_subject", "key_versions"]

#: Subjects per statement (keeps IN lists well under every database's parameter limit).
_CHUNK = 500


class KeyExecutor(Protocol):
    """Runs the key table's SQLAlchemy Core statements in the caller's open transaction."""

    @property
    def dialect(self) -> Dialect:
        """The dialect of the database (picks the INSERT form that ignores conflicts)."""
        ...

    def fetch(self, query: Select[Any]) -> Sequence[Sequence[Any]]:
        """The rows of ``query`` (values as the DBAPI returns them)."""
        ...

    def insert_many(self, statement: Insert, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute ``statement`` once per row (all rows have the same keys)."""
        ...


class ConnectionExecutor:
    """A KeyExecutor on a SQLAlchemy ``Connection`` (its current transaction)."""

    __slots__ = ("_connection",)

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @property
    def dialect(self) -> Dialect:
        """The connection's dialect."""
        return self._connection.dialect

    def fetch(self, query: Select[Any]) -> Sequence[Sequence[Any]]:
        """The rows of ``query``."""
        return self._connection.execute(query).all()

    def insert_many(self, statement: Insert, rows: Sequence[Mapping[str, Any]]) -> None:
        """``statement`` with every row (one executemany)."""
        self._connection.execute(statement, list(rows))


def _executor_of(connection: Connection | KeyExecutor) -> KeyExecutor:
    """``connection`` as a KeyExecutor (a SQLAlchemy Connection is wrapped)."""
    return ConnectionExecutor(connection) if isinstance(connection, Connection) else connection


class SubjectKeys:
    """The key table seen through one master key. Thread safe; holds no key material."""

    __slots__ = ("_master",)

    def __init__(self, master: MasterKey) -> None:
        self._master = master

    @classmethod
    def from_settings(cls, settings: PersonalDataSettings) -> SubjectKeys:
        """Keys unwrapped with the configured master key; MasterKeyError without one."""
        from .crypto import MasterKey  # imports cryptography (the crypto extra)

        return cls(MasterKey.from_settings(settings))

    def __repr__(self) -> str:
        return "SubjectKeys(<master key>)"

    @property
    def master(self) -> MasterKey:
        """The master key (seals and opens values with unwrapped subject keys)."""
        return self._master

    def current(
        self, connection: Connection | KeyExecutor, subjects: Collection[str]
    ) -> dict[str, tuple[int, bytes]]:
        """(version, key) of each subject's newest key, created when missing or shredded."""
        executor = _executor_of(connection)
        newest = self._newest(executor, subjects)
        missing = [s for s in subjects if newest.get(s, (0, None))[1] is None]
        if missing:
            rows = []
            for subject in missing:
                version = newest.get(subject, (0, None))[0] + 1
                rows.append(
                    {
                        "subject": subject,
                        "version": version,
                        "wrapped_key": self._master.new_wrapped_key(subject, version)[1],
                    }
                )
            executor.insert_many(_insert_ignoring_conflicts(executor.dialect), rows)
            newest.update(self._newest(executor, missing))
        result: dict[str, tuple[int, bytes]] = {}
        for subject in subjects:
            version, wrapped = newest.get(subject, (0, None))
            if wrapped is None:  # erased by another transaction between our insert and read
                raise PersonalDataError(
                    f"the key of subject {subject!r} was erased while this transaction created "
                    "it; publish again"
                )
            result[subject] = (version, self._master.unwrap(subject, version, wrapped))
        return result

    def lookup(
        self, connection: Connection | KeyExecutor, pairs: Collection[tuple[str, int]]
    ) -> dict[tuple[str, int], bytes | None]:
        """The key of each (subject, version); None when shredded or unknown (erased)."""
        executor = _executor_of(connection)
        found: dict[tuple[str, int], bytes | None] = dict.fromkeys(pairs)
        ordered = sorted(pairs)
        for start in range(0, len(ordered), _CHUNK):
            chunk = ordered[start : start + _CHUNK]
            condition = or_(
                *(and_(subject_keys.c.subject == s, subject_keys.c.version == v) for s, v in chunk)
            )
            query = select(
                subject_keys.c.subject, subject_keys.c.version, subject_keys.c.wrapped_key
            ).where(condition, subject_keys.c.wrapped_key.is_not(None))
            for subject, version, wrapped in executor.fetch(query):
                found[(subject, int(version))] = self._master.unwrap(
                    subject, int(version), bytes(wrapped)
                )
        return found

    def rotate(self, connection: Connection, subject: str) -> int:
        """Add the next key version of ``subject`` (used for new values from now on); return it."""
        version = _max_version(connection, subject) + 1
        _, wrapped = self._master.new_wrapped_key(subject, version)
        connection.execute(
            insert(subject_keys).values(subject=subject, version=version, wrapped_key=wrapped)
        )
        return version

    def _newest(
        self, executor: KeyExecutor, subjects: Iterable[str]
    ) -> dict[str, tuple[int, bytes | None]]:
        """Each subject's highest version and its wrapped key (None when shredded)."""
        result: dict[str, tuple[int, bytes | None]] = {}
        ordered = sorted(set(subjects))
        for start in range(0, len(ordered), _CHUNK):
            chunk = ordered[start : start + _CHUNK]
            top = (
                select(subject_keys.c.subject, func.max(subject_keys.c.version).label("version"))
                .where(subject_keys.c.subject.in_(chunk))
                .group_by(subject_keys.c.subject)
                .subquery()
            )
            query = select(
                subject_keys.c.subject, subject_keys.c.version, subject_keys.c.wrapped_key
            ).join(
                top,
                and_(
                    subject_keys.c.subject == top.c.subject,
                    subject_keys.c.version == top.c.version,
                ),
            )
            for subject, version, wrapped in executor.fetch(query):
                result[subject] = (int(version), None if wrapped is None else bytes(wrapped))
        return result


def erase_subject(connection: Connection, subject: str) -> int:
    """Crypto-shred ``subject``: blank every live key version; return how many were shredded.

    Runs in ``connection``'s transaction (commit it). Idempotent: 0 when nothing was left.
    """
    result = connection.execute(
        update(subject_keys)
        .where(subject_keys.c.subject == subject, subject_keys.c.wrapped_key.is_not(None))
        .values(wrapped_key=None, shredded_at=datetime.now(UTC))
    )
    return int(result.rowcount)


def key_versions(connection: Connection, subject: str) -> list[tuple[int, bool]]:
    """(version, shredded) of every key version of ``subject``, oldest first."""
    query = (
        select(subject_keys.c.version, subject_keys.c.wrapped_key.is_(None))
        .where(subject_keys.c.subject == subject)
        .order_by(subject_keys.c.version)
    )
    return [(int(version), bool(shredded)) for version, shredded in connection.execute(query)]


def _max_version(connection: Connection, subject: str) -> int:
    query = select(func.max(subject_keys.c.version)).where(subject_keys.c.subject == subject)
    return int(connection.execute(query).scalar() or 0)


def _insert_ignoring_conflicts(dialect: Dialect) -> Insert:
    """INSERT that skips rows whose (subject, version) another transaction just created."""
    name = dialect.name
    if name == "postgresql":
        return postgresql.insert(subject_keys).on_conflict_do_nothing()
    if name == "sqlite":
        return sqlite.insert(subject_keys).on_conflict_do_nothing()
    return insert(subject_keys)
