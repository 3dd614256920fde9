"""Parked rows: rows the relay gave up on, and what an operator can do with them.

A send that fails for good (PermanentPublishError: too large, topic not authorized, headers not
decodable) counts an attempt on the row and holds back that *aggregate only* for a backoff, so
neighbours keep flowing and no CPU spins; the row is retried until ``RelaySettings.max_attempts``,
then parked (``status = 'parked'``, ``attempts``, ``last_error``) and its aggregate moves on.
When a batch of several rows fails for good, the failing row is not known: those rows are sent
one per batch next time ("suspects") so only the culprit is charged.

Operators list parked rows, send them back to pending (``retry``: attempts reset, the relay
publishes them after everything already published for their aggregate) or delete them
(``discard``) through ``eventseam outbox parked``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import Engine, delete, select, text, update

from .errors import RowNotFoundError
from .notify import NOTIFY_SQL
from .table import Status, outbox

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from sqlalchemy import Connection

    from engine.retry import RetryPolicy

    from .claim import Claims, PendingRow

log = structlog.get_logger(__name__)


class Failures:
    """The relay's memory of rows that failed for good: blocked aggregates and suspect rows."""

    def __init__(self, claims: Claims, policy: RetryPolicy) -> None:
        self._claims, self._policy = claims, policy
        #: aggregate id -> monotonic time before which its rows are not sent
        self.blocked: dict[str, float] = {}
        #: seqs to send alone in a batch (their multi-row batch failed for good)
        self.suspects: set[int] = set()
        #: changes whenever ``blocked`` or ``suspects`` grows (batches built earlier are stale)
        self.version = 0

    def block(self, key: str, seconds: float) -> None:
        """Hold ``key``'s rows back for ``seconds``."""
        self.blocked[key] = max(self.blocked.get(key, 0.0), time.monotonic() + seconds)
        self.version += 1

    def excluded_keys(self) -> list[str]:
        """Aggregates still held back (expired entries are dropped)."""
        now = time.monotonic()
        for key in [key for key, until in self.blocked.items() if until <= now]:
            del self.blocked[key]
        return list(self.blocked)

    def suspect(self, rows: Sequence[PendingRow]) -> None:
        """Send these rows one per batch from now on, to find which one fails."""
        self.suspects.update(row.seq for row in rows)
        self.version += 1

    def cleared(self, rows: Sequence[PendingRow]) -> None:
        """These rows were published: forget their suspicion."""
        if self.suspects:
            self.suspects.difference_update(row.seq for row in rows)

    async def record(self, rows: Sequence[PendingRow], error: str) -> None:
        """Count one failed attempt on each of ``rows``; block their aggregates or park them."""
        for row in rows:
            self.block(row.key, self._policy.maximum)  # until the database answers
        seqs = [row.seq for row in rows]
        max_attempts = self._policy.max_attempts
        for failed in await self._claims.record_failure(seqs, error, max_attempts=max_attempts):
            self.suspects.discard(failed.seq)
            context = {
                "event_id": str(failed.id),
                "aggregate_id": failed.key,
                "attempts": failed.attempts,
            }
            self.version += 1
            if failed.status == Status.PARKED:
                self.blocked.pop(failed.key, None)
                log.warning("outbox.row_parked", error=error, **context)
            else:
                self.blocked[failed.key] = time.monotonic() + self._policy.delay(failed.attempts)
                log.warning("outbox.row_failed", error=error, **context)


@dataclass(frozen=True, slots=True)
class ParkedRow:
    """A parked outbox row as operators see it."""

    seq: int
    event_id: uuid.UUID
    context: str
    aggregate_id: str
    event_type: str
    attempts: int
    last_error: str | None
    created_at: datetime


def list_parked(bind: Engine, *, limit: int = 100) -> list[ParkedRow]:
    """Up to ``limit`` parked rows, oldest first."""
    columns = (
        outbox.c.seq,
        outbox.c.id,
        outbox.c.aggregatetype,
        outbox.c.aggregateid,
        outbox.c.type,
        outbox.c.attempts,
        outbox.c.last_error,
        outbox.c.created_at,
    )
    query = (
        select(*columns).where(outbox.c.status == Status.PARKED).order_by(outbox.c.seq).limit(limit)
    )
    with bind.connect() as connection:
        return [ParkedRow(*row) for row in connection.execute(query)]


def retry_parked(bind: Engine, event_id: uuid.UUID | str) -> None:
    """Send one parked row back to pending (RowNotFoundError when no such parked row)."""
    with bind.begin() as connection:
        count = _to_pending(connection, outbox.c.id == _uuid(event_id))
        if count == 0:
            raise RowNotFoundError(str(event_id))


def retry_all_parked(bind: Engine) -> int:
    """Send every parked row back to pending; how many."""
    with bind.begin() as connection:
        return _to_pending(connection, None)


def discard_parked(bind: Engine, event_id: uuid.UUID | str) -> None:
    """Delete one parked row for good (RowNotFoundError when no such parked row)."""
    statement = delete(outbox).where(
        outbox.c.id == _uuid(event_id), outbox.c.status == Status.PARKED
    )
    with bind.begin() as connection:
        if connection.execute(statement).rowcount == 0:
            raise RowNotFoundError(str(event_id))


def _to_pending(connection: Connection, condition: object | None) -> int:
    statement = update(outbox).where(outbox.c.status == Status.PARKED)
    if condition is not None:
        statement = statement.where(condition)  # type: ignore[arg-type]
    count = connection.execute(statement.values(status=Status.PENDING, attempts=0)).rowcount
    if count and connection.dialect.name == "postgresql":
        connection.execute(text(NOTIFY_SQL))
    return int(count)


def _uuid(event_id: uuid.UUID | str) -> uuid.UUID:
    try:
        return event_id if isinstance(event_id, uuid.UUID) else uuid.UUID(str(event_id))
    except ValueError as exc:
        raise RowNotFoundError(str(event_id)) from exc
