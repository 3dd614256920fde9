"""Fixtures of the integration tests that work on the eventseam tables directly."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine, create_engine, event

from outbox.claim import create_relay_engine
from outbox.notify import install_notify_trigger
from outbox.table import metadata

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from sqlalchemy.ext.asyncio import AsyncEngine


@pytest.fixture
def sync_db(database_url: str) -> Iterator[Engine]:
    """A sync engine with the eventseam tables (and the NOTIFY trigger on PostgreSQL)."""
    engine = create_engine(database_url)
    metadata.create_all(engine)
    install_notify_trigger(engine)
    yield engine
    engine.dispose()


@pytest.fixture
async def relay_db(sync_db: Engine) -> AsyncIterator[AsyncEngine]:
    """The relay's async engine on the same database."""
    engine = create_relay_engine(sync_db.url.render_as_string(hide_password=False))
    yield engine
    await engine.dispose()


@pytest.fixture
def relay_deletes(relay_db: AsyncEngine) -> list[int]:
    """Rows deleted by each DELETE the relay's engine runs, in order (filled as they run)."""
    deleted: list[int] = []

    @event.listens_for(relay_db.sync_engine, "after_cursor_execute")
    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            deleted.append(cursor.rowcount)  # type: ignore[attr-defined]

    return deleted
