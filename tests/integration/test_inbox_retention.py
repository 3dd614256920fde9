"""Inbox retention: the relay's purger and ``eventseam inbox purge`` delete rows past the window.

The runner's dead-letter marks (eventseam_dlq_sent) share the inbox's window and go with it.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import anyio
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, func, insert, select
from sqlalchemy.orm import sessionmaker

from engine.cli import main
from engine.seam import EventSeam
from engine.settings import InboxSettings, RelaySettings, load_settings
from outbox.dead_letter_table import dlq_sent
from outbox.inbox_table import inbox
from outbox.retention import Purger

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

pytestmark = pytest.mark.anyio

HANDLER = "ledger.book_sale"


def add_rows(engine: Engine, count: int, age: timedelta, handler: str = HANDLER) -> None:
    """``count`` inbox rows for ``handler`` processed ``age`` ago."""
    when = datetime.now(UTC) - age
    with engine.begin() as connection:
        connection.execute(
            insert(inbox),
            [
                {"handler": handler, "event_id": uuid.uuid4(), "processed_at": when}
                for _ in range(count)
            ],
        )


def add_marks(engine: Engine, count: int, age: timedelta) -> None:
    """``count`` dead-letter marks of HANDLER made ``age`` ago, at offsets from a fresh base."""
    when, base = datetime.now(UTC) - age, uuid.uuid4().int % 1_000_000 * 1_000
    with engine.begin() as connection:
        connection.execute(
            insert(dlq_sent),
            [
                {
                    "handler": HANDLER,
                    "topic": "t.sales",
                    "partition_no": 0,
                    "record_offset": base + n,
                    "event_id": str(uuid.uuid4()),
                    "dead_letter_topic": "t.dlq.ledger.book_sale",
                    "state": "sent",
                    "marked_at": when,
                }
                for n in range(count)
            ],
        )


def marks(engine: Engine) -> int:
    """Dead-letter marks left."""
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(dlq_sent)).scalar_one())


def ages(engine: Engine) -> list[tuple[str, int]]:
    """(handler, row count) per handler, sorted."""
    with engine.connect() as connection:
        query = select(inbox.c.handler, func.count()).group_by(inbox.c.handler)
        return sorted((handler, int(count)) for handler, count in connection.execute(query))


async def test_the_relay_purger_deletes_expired_inbox_rows_in_bounded_batches(
    sync_db: Engine, relay_db: AsyncEngine, relay_deletes: list[int]
) -> None:
    """Rows and marks older than inbox.retention_seconds go, purge_batch per DELETE; younger ones stay."""
    add_rows(sync_db, 23, timedelta(days=8))
    add_rows(sync_db, 4, timedelta(days=6), handler="ledger.count_sale")
    add_marks(sync_db, 12, timedelta(days=9))
    add_marks(sync_db, 5, timedelta(days=1))
    purger = Purger(
        relay_db,
        RelaySettings(),
        inbox=InboxSettings(retention_seconds=7 * 86_400, purge_batch=10),
        active=lambda: True,
    )
    try:
        assert await purger.purge_inbox_once() == 23 + 12
        assert relay_deletes == [10, 10, 3, 10, 2]  # inbox rows, then marks
        assert ages(sync_db) == [("ledger.count_sale", 4)]
        assert marks(sync_db) == 5
        assert await purger.purge_inbox_once() == 0
    finally:
        await purger.aclose()


async def test_a_purger_without_inbox_settings_leaves_the_inbox_alone(
    sync_db: Engine, relay_db: AsyncEngine
) -> None:
    """Purger(inbox=None) purges the outbox only (what a caller that owns no inbox asks for)."""
    add_rows(sync_db, 3, timedelta(days=30))
    purger = Purger(relay_db, RelaySettings(), active=lambda: True)
    try:
        assert await purger.purge_inbox_once() == 0
        assert ages(sync_db) == [(HANDLER, 3)]
    finally:
        await purger.aclose()


async def test_the_running_purger_purges_the_inbox_on_its_own_while_active(
    sync_db: Engine, relay_db: AsyncEngine
) -> None:
    """``run`` purges on its interval, only while ``active()`` (the relay holds slot 0)."""
    add_rows(sync_db, 5, timedelta(seconds=30))
    active = False
    purger = Purger(
        relay_db,
        RelaySettings(retention_seconds=3600),
        inbox=InboxSettings(retention_seconds=2.0),
        active=lambda: active,
    )
    try:
        async with anyio.create_task_group() as group:
            await group.start(purger.run)
            await anyio.sleep(2.5)  # at least two passes fell due while inactive
            assert ages(sync_db) == [(HANDLER, 5)]
            active = True
            with anyio.fail_after(30):
                while ages(sync_db):  # noqa: ASYNC110 - polls the database, nothing to wait on
                    await anyio.sleep(0.1)
            group.cancel_scope.cancel()
    finally:
        await purger.aclose()


def test_inbox_purge_command_deletes_rows_past_the_window(
    sync_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`eventseam inbox purge` uses inbox.retention_seconds, or --older-than, and says how many."""
    add_rows(sync_db, 7, timedelta(days=10))
    add_rows(sync_db, 2, timedelta(days=3))
    add_marks(sync_db, 4, timedelta(days=10))
    add_marks(sync_db, 1, timedelta(days=3))
    url = sync_db.url.render_as_string(hide_password=False)
    monkeypatch.setenv("EVENTSEAM_DATABASE_URL", url)
    monkeypatch.setenv("EVENTSEAM_INBOX__RETENTION_SECONDS", str(7 * 86_400))
    result = CliRunner().invoke(main, ["inbox", "purge", "--batch", "3"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("7 inbox rows processed and 4 dead-letter marks made before ")
    assert ages(sync_db) == [(HANDLER, 2)]
    assert marks(sync_db) == 1
    result = CliRunner().invoke(main, ["inbox", "purge", "--url", url, "--older-than", "2d"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("2 inbox rows processed and 1 dead-letter marks")
    assert ages(sync_db) == []
    assert marks(sync_db) == 0


def purging_app() -> EventSeam:
    """``--app`` factory: an application on $INBOX_TEST_DATABASE keeping inbox rows an hour."""
    settings = load_settings(
        database_url=os.environ["INBOX_TEST_DATABASE"], inbox={"retention_seconds": 3600}
    )
    return EventSeam(
        settings, [], session_factory=sessionmaker(create_engine(settings.database_url))
    )


def test_inbox_purge_reads_the_settings_of_an_application_named_on_purpose(
    sync_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --app, `eventseam inbox purge` takes that application's database and window (an
    hour); without it, the environment's (here a week, on the same database)."""
    add_rows(sync_db, 3, timedelta(days=2))
    add_rows(sync_db, 1, timedelta(minutes=5))
    url = sync_db.url.render_as_string(hide_password=False)
    monkeypatch.setenv("INBOX_TEST_DATABASE", url)
    monkeypatch.setenv("EVENTSEAM_DATABASE_URL", url)
    monkeypatch.setenv("EVENTSEAM_INBOX__RETENTION_SECONDS", str(7 * 86_400))
    result = CliRunner().invoke(main, ["inbox", "purge"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("0 inbox rows processed")
    monkeypatch.delenv("EVENTSEAM_DATABASE_URL")
    result = CliRunner().invoke(main, ["--app", f"{__name__}:purging_app", "inbox", "purge"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("3 inbox rows processed")
    assert [count for _, count in ages(sync_db)] == [1]


def test_inbox_purge_command_rejects_a_bad_time() -> None:
    """A value that is neither a duration nor an ISO time is a usage error (exit 2) naming both."""
    result = CliRunner().invoke(main, ["inbox", "purge", "--older-than", "last week"])
    assert result.exit_code == 2
    assert "neither an ISO 8601 time" in result.output
