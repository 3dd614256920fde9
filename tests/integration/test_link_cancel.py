"""A relay statement on SQLite cancelled midway finishes first: nothing is left to hang the exit.

Regression: SQLAlchemy invalidates an aiosqlite connection whose statement was cancelled; when
the cancellation also interrupted that invalidation, the graceful-close task it had started
waited forever for the connection's stopped thread, so ``asyncio.run`` never returned and a
relay process hung after logging ``relay.stopped`` (tests/reliability/test_crash_points.py).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from sqlalchemy import create_engine, delete, func, select

from outbox.claim import Link, create_relay_engine
from outbox.table import metadata, outbox

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio


def stranded() -> list[asyncio.Task[object]]:
    """Tasks of SQLAlchemy's graceful close of an invalidated aiosqlite connection still pending."""
    return [
        task
        for task in asyncio.all_tasks()
        if not task.done() and "_terminate_graceful_close" in repr(task.get_coro())
    ]


async def test_cancelled_sqlite_statement_completes_and_strands_no_close_task(
    tmp_path: Path,
) -> None:
    """A Link statement waiting on a SQLite lock when its scope is cancelled runs to its end once the lock is free, and leaves no close task behind."""
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    sync = create_engine(url)
    metadata.create_all(sync)
    engine = create_relay_engine(url)
    link = Link(engine)
    await link.execute(select(func.count()).select_from(outbox))  # connected
    blocker = sync.connect()
    blocker.exec_driver_sql("BEGIN EXCLUSIVE")

    async def release_later() -> None:
        await anyio.sleep(0.6)
        await anyio.to_thread.run_sync(blocker.rollback)

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(release_later)
            with anyio.move_on_after(0.2) as scope:
                await link.execute(delete(outbox))  # waits for the blocker's lock
        await anyio.sleep(0.5)
        left = stranded()
        for task in left:  # let a failing run finish instead of hanging the loop's shutdown
            task.cancel()
            await anyio.lowlevel.checkpoint()
            task.cancel()
        assert scope.cancel_called
        assert left == []
        assert (await link.execute(select(func.count()).select_from(outbox))).scalar_one() == 0
    finally:
        blocker.close()
        await link.aclose()
        await engine.dispose()
        sync.dispose()
