"""A relay on SQLite keeps an aggregate's order when the next transaction follows deleted rows.

The interleaving of reliability item 10 (docs/RELIABILITY.md), made deterministic: the relay sent
and acknowledged a first transaction, its marks (deletes) wait behind SQLite's write lock, held
by another connection. The next fetch starts; only then the lock is released, the deletes land
and a second transaction commits. With ``seq`` a plain rowid the second transaction reused the
deleted ``seq`` values, which the relay still counted as its own acknowledged rows: it left them
out and sent the aggregate's events 5-8 before 1-4. With AUTOINCREMENT (outbox/table.py) the new
rows get new ``seq`` values and go out in order.
"""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import pytest
from sqlalchemy import Engine, select

from outbox.table import outbox
from tests.kafka_broker import (
    create_outbox,
    item,
    read_topic,
    relay_running,
    relay_settings,
    wait_for,
    write_events,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from outbox.bundled_broker import BundledBroker
    from outbox.relay import Relay

pytestmark = [pytest.mark.anyio, pytest.mark.broker]


@pytest.fixture
def sqlite_outbox(tmp_path: Path) -> Iterator[Engine]:
    """A SQLite outbox with the tables as the metadata defines them."""
    engine = create_outbox(f"sqlite:///{tmp_path / 'outbox.db'}")
    yield engine
    engine.dispose()


def seqs(engine: Engine) -> set[int]:
    """The ``seq`` of every outbox row."""
    with engine.connect() as connection:
        return set(connection.scalars(select(outbox.c.seq)))


class WriteLock:
    """SQLite's write lock, held from a connection of its own (the relay's deletes wait)."""

    def __init__(self, path: str) -> None:
        self._connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._held = False

    def take(self) -> None:
        """Take the lock (the relay's reads go on, its writes wait)."""
        self._connection.execute("BEGIN IMMEDIATE")
        self._held = True

    def release(self) -> None:
        """Let the waiting writes in (again: no-op)."""
        if self._held:
            self._held = False
            self._connection.execute("COMMIT")

    def close(self) -> None:
        """Release the lock and close the connection."""
        self.release()
        self._connection.close()


def stall_marks_into_next_fetch(relay: Relay, engine: Engine, lock: WriteLock) -> anyio.Event:
    """On the relay's first fetch after the first transaction was acknowledged: release the lock,
    wait for the deletes to land, commit the second transaction, then fetch. Set once written."""
    claims: Any = relay._claims  # the relay's own statements, with one step injected
    fetch = claims.fetch
    first = seqs(engine)
    assert first, "the first transaction was deleted before the lock was taken"
    written = anyio.Event()

    async def fetch_after_a_commit(*args: Any, **kwargs: Any) -> Any:
        if not written.is_set() and first <= relay._marker.outstanding:
            lock.release()
            await wait_for(lambda: not seqs(engine) & first, message="first rows deleted")
            second = [item("agg", n) for n in range(1, 9)]
            await anyio.to_thread.run_sync(write_events, engine, second)
            written.set()
        return await fetch(*args, **kwargs)

    claims.fetch = fetch_after_a_commit
    return written


async def test_rows_written_after_deleted_ones_go_out_in_order(
    sqlite_outbox: Engine, kafka_broker: BundledBroker, topic_prefix: str
) -> None:
    """The aggregate's 8 events of the second transaction reach the topic in order."""
    url = sqlite_outbox.url.render_as_string(hide_password=False)
    database = sqlite_outbox.url.database
    assert database is not None
    settings = relay_settings(url, kafka_broker.bootstrap_servers, topic_prefix, lease_seconds=30)
    async with relay_running(settings) as relay:
        lock = WriteLock(database)
        try:
            write_events(sqlite_outbox, [item("first", n) for n in range(1, 5)])
            lock.take()  # the relay reads and sends; its marks wait for the lock
            written = stall_marks_into_next_fetch(relay, sqlite_outbox, lock)
            with anyio.fail_after(30):
                await written.wait()
        finally:
            lock.close()
        await wait_for(lambda: not seqs(sqlite_outbox), message="outbox drained")
    records = await read_topic(kafka_broker.bootstrap_servers, f"{topic_prefix}orders", expected=12)
    numbers = [json.loads(r.value)["n"] for r in records if r.key == b"agg"]
    assert numbers == list(range(1, 9)), f"agg numbers in topic order: {numbers}"
