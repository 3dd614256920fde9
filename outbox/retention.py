"""Retention: purging published (and local) rows after ``RelaySettings.retention_seconds``.

With ``retention_seconds == 0`` the relay deletes each row as soon as the broker acknowledged it
(outbox.claim); otherwise it marks the row ``published`` and this purger deletes it once older
than the window. Rows of contexts in ``local`` mode are never relayed: they are kept for the same
window, then purged too. Deletes go in bounded batches of ``purge_batch`` rows (one short
statement each), so a large backlog never holds long locks. Only the relay holding slot 0 purges,
so several relays never compete for the same rows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import structlog
from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import SQLAlchemyError

from .claim import Link
from .table import Status, outbox

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.ext.asyncio import AsyncEngine

    from engine.settings import RelaySettings

log = structlog.get_logger(__name__)


def purge_interval(settings: RelaySettings) -> float:
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
    """Deletes expired published and local rows in bounded batches."""

    def __init__(
        self, engine: AsyncEngine, settings: RelaySettings, *, active: Callable[[], bool]
    ) -> None:
        self._link = Link(engine)
        self._settings = settings
        self._active = active
        self._statements = (
            _purge_statement(Status.PUBLISHED, by_published=True),
            _purge_statement(Status.LOCAL, by_published=False),
        )

    async def purge_once(self) -> int:
        """Delete every expired row, ``purge_batch`` at a time; how many were deleted."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self._settings.retention_seconds)
        limit = self._settings.purge_batch
        total = 0
        for statement in self._statements:
            while True:
                result = await self._link.execute(statement, {"cutoff": cutoff, "limit": limit})
                total += result.rowcount
                if result.rowcount < limit:
                    break
                await anyio.lowlevel.checkpoint()  # let the relay run between batches
        return total

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Purge every ``purge_interval`` while ``active()`` (slot 0 is ours) until cancelled."""
        task_status.started()
        while True:
            await anyio.sleep(purge_interval(self._settings))
            if not self._active():
                continue
            try:
                deleted = await self.purge_once()
            except (SQLAlchemyError, OSError) as exc:
                log.warning("outbox_purge_failed", error=str(exc))
                continue
            if deleted:
                log.info(
                    "outbox_purged",
                    rows=deleted,
                    retention_seconds=self._settings.retention_seconds,
                )

    async def aclose(self) -> None:
        """Close the connection."""
        await self._link.aclose()
