"""Retention: purging published (and local) rows after ``RelaySettings.retention_seconds``.

With ``retention_seconds == 0`` the relay deletes each row as soon as the broker acknowledged it
(outbox.claim); otherwise it marks the row ``published`` and this purger deletes it once older
than the window. Rows of contexts in ``local`` mode are never relayed: they are kept for the same
window, then purged too. Deletes go in bounded batches of ``purge_batch`` rows (one short
statement each), so a large backlog never holds long locks. Only the relay holding slot 0 purges,
so several relays never compete for the same rows.

The same relay purges inbox rows (engine.inbox) processed more than
``InboxSettings.retention_seconds`` ago, in batches of ``InboxSettings.purge_batch``: the inbox
lives in the same database, and every deployment that relays runs a relay.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import structlog
from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import SQLAlchemyError

from engine.inbox import window_purge_statements

from .claim import Link
from .table import Status, outbox

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlalchemy.ext.asyncio import AsyncEngine

    from engine.settings import InboxSettings, RelaySettings

log = structlog.get_logger(__name__)


def purge_interval(settings: RelaySettings | InboxSettings) -> float:
    """Seconds between purge passes: half the window, within [1, 60]."""
    return min(60.0, max(1.0, settings.retention_seconds / 2))


def _purge_statement(status: str, *, by_published: bool) -> object:
    """DELETE of up to ``:limit`` rows of ``status`` older than ``:cutoff``."""
    old = outbox.c.created_at < bindparam("cutoff")
    if by_published:
        old = old & (outbox.c.published_at < bindparam("cutoff"))
    chosen = select(outbox.c.seq).where(outbox.c.status == status, old).limit(bindparam("limit"))
    return delete(outbox).where(outbox.c.seq.in_(chosen.scalar_subquery()))


class Purger:
    """Deletes expired published and local outbox rows, and expired inbox rows, in bounded batches."""

    def __init__(
        self,
        engine: AsyncEngine,
        settings: RelaySettings,
        *,
        active: Callable[[], bool],
        inbox: InboxSettings | None = None,
    ) -> None:
        """``inbox``: purge inbox rows too, with these settings (None: the outbox only)."""
        self._link = Link(engine)
        self._settings = settings
        self._inbox = inbox
        self._active = active
        self._statements = (
            _purge_statement(Status.PUBLISHED, by_published=True),
            _purge_statement(Status.LOCAL, by_published=False),
        )
        self._inbox_statements = window_purge_statements()

    async def purge_once(self) -> int:
        """Delete every expired outbox row, ``purge_batch`` at a time; how many were deleted."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self._settings.retention_seconds)
        total = 0
        for statement in self._statements:
            total += await self._delete(statement, cutoff, self._settings.purge_batch)
        return total

    async def purge_inbox_once(self) -> int:
        """Delete every expired inbox row and dead-letter mark, ``purge_batch`` at a time (0 without)."""
        if self._inbox is None:
            return 0
        cutoff = datetime.now(UTC) - timedelta(seconds=self._inbox.retention_seconds)
        total = 0
        for statement in self._inbox_statements:
            total += await self._delete(statement, cutoff, self._inbox.purge_batch)
        return total

    async def _delete(self, statement: object, cutoff: datetime, limit: int) -> int:
        total = 0
        while True:
            result = await self._link.execute(statement, {"cutoff": cutoff, "limit": limit})
            deleted = int(result.rowcount)
            total += deleted
            if deleted < limit:
                return total
            await anyio.lowlevel.checkpoint()  # let the relay run between batches

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Purge each table every ``purge_interval`` of its window while ``active()`` (slot 0 is ours)."""
        task_status.started()
        now = anyio.current_time()
        outbox_due = now + purge_interval(self._settings)
        inbox_due = now + (purge_interval(self._inbox) if self._inbox else float("inf"))
        while True:
            await anyio.sleep(max(0.0, min(outbox_due, inbox_due) - anyio.current_time()))
            now = anyio.current_time()
            if outbox_due <= now:
                outbox_due = now + purge_interval(self._settings)
                if self._active():
                    await self._pass("outbox", self.purge_once, self._settings.retention_seconds)
            if self._inbox is not None and inbox_due <= now:
                inbox_due = now + purge_interval(self._inbox)
                if self._active():
                    await self._pass("inbox", self.purge_inbox_once, self._inbox.retention_seconds)

    async def _pass(self, table: str, purge: Callable[[], Awaitable[int]], window: float) -> None:
        """One purge pass of ``table``, logged; a database failure is logged and retried later."""
        try:
            deleted = await purge()
        except (SQLAlchemyError, OSError) as exc:
            log.warning(f"{table}_purge_failed", error=str(exc))
            return
        if deleted:
            log.info(f"{table}_purged", rows=deleted, retention_seconds=window)

    async def aclose(self) -> None:
        """Close the connection."""
        await self._link.aclose()
