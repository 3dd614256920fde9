"""The inbox on real SQLite and PostgreSQL: record, claim, batches, rollback, purge, migration."""

from __future__ import annotations

import importlib.util
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import engine.inbox as inbox_module
from engine.inbox import (
    InboxEntry,
    already_applied,
    claim,
    claim_async,
    filter_new,
    filter_new_async,
    purge,
    record,
    record_many,
    record_many_async,
)
from outbox.flag_table import flags
from outbox.inbox_table import inbox
from outbox.table import NAMING_CONVENTION
from tests.conftest import async_url

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

HANDLER = "shipping.create_label_on_payment_authorized"
MIGRATION = Path(__file__).parents[2] / "outbox" / "migrations" / "versions" / "0003_flags_inbox.py"

#: A table the handler writes to, so tests can check the inbox row shares its transaction.
side_metadata = MetaData()
labels = Table("test_labels", side_metadata, Column("order_id", String(50), primary_key=True))


@pytest.fixture
def db(database_url: str) -> Iterator[Engine]:
    """An engine on a fresh database holding the inbox table and the handler's own table."""
    engine = create_engine(database_url)
    inbox.metadata.create_all(engine, tables=[inbox])
    side_metadata.create_all(engine)
    yield engine
    engine.dispose()


class StatementLog:
    """Records the SQL statements an engine executes (one entry per cursor execute)."""

    def __init__(self, engine: Engine) -> None:
        self.statements: list[str] = []
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *args: Any) -> None:
        self.statements.append(str(args[2]).strip().split()[0].upper())

    def count(self, verb: str) -> int:
        """How many statements began with ``verb`` (SELECT, INSERT, DELETE...)."""
        return self.statements.count(verb)


def _count(connection: Connection) -> int:
    return int(connection.execute(select(func.count()).select_from(inbox)).scalar_one())


def test_record_then_already_applied(db: Engine) -> None:
    """A recorded (handler, event_id) is applied for that handler only."""
    event_id = uuid.uuid4()
    with db.begin() as connection:
        assert not already_applied(connection, HANDLER, event_id)
        record(connection, HANDLER, event_id, "payments.PaymentAuthorized", context="payments")
        assert already_applied(connection, HANDLER, event_id)
    with db.connect() as connection:
        assert already_applied(connection, HANDLER, str(event_id))
        assert not already_applied(connection, "shipping.other_handler", event_id)
        assert not already_applied(connection, HANDLER, uuid.uuid4())
        row = connection.execute(select(inbox)).one()
    assert (row.event_type, row.context) == ("payments.PaymentAuthorized", "payments")
    assert row.processed_at is not None


def test_record_twice_raises_integrity_error(db: Engine) -> None:
    """Recording the same pair twice violates the primary key."""
    event_id = uuid.uuid4()
    with db.begin() as connection:
        record(connection, HANDLER, event_id)
    with db.connect() as connection, pytest.raises(IntegrityError):
        record(connection, HANDLER, event_id)


def test_second_claim_returns_false(db: Engine) -> None:
    """The first claim wins; later claims of the pair return False without aborting the transaction."""
    event_id = uuid.uuid4()
    with db.begin() as connection:
        assert claim(
            connection, HANDLER, event_id, "payments.PaymentAuthorized", context="payments"
        )
        assert not claim(connection, HANDLER, event_id)
        connection.execute(insert(labels).values(order_id="o-1"))  # the transaction is still usable
    with db.begin() as connection:
        assert not claim(connection, HANDLER, event_id)
        assert claim(connection, "shipping.other_handler", event_id)
        assert _count(connection) == 2


def test_rollback_removes_the_inbox_row(db: Engine) -> None:
    """A rolled-back handler transaction takes its inbox row with it, so the event applies again."""
    event_id = uuid.uuid4()
    with Session(db) as session:
        assert claim(session, HANDLER, event_id, "payments.PaymentAuthorized", context="payments")
        session.execute(insert(labels).values(order_id="o-1"))
        session.rollback()
    with Session(db) as session, session.begin():
        assert not already_applied(session, HANDLER, event_id)
        assert session.execute(select(labels)).first() is None
        assert claim(session, HANDLER, event_id)
        session.execute(insert(labels).values(order_id="o-1"))
    with db.connect() as connection:
        assert already_applied(connection, HANDLER, event_id)
        assert connection.execute(select(labels.c.order_id)).scalars().all() == ["o-1"]


def test_filter_new_and_record_many_take_one_statement_each(db: Engine) -> None:
    """A batch is filtered with one SELECT and recorded with one multi-row INSERT."""
    ids = [uuid.uuid4() for _ in range(50)]
    with db.begin() as connection:
        record_many(connection, HANDLER, [InboxEntry(i, "t.Happened", "t") for i in ids[:20]])
    log = StatementLog(db)
    with db.begin() as connection:
        new = filter_new(connection, HANDLER, [*ids, ids[0]])
        assert new == set(ids[20:])
        assert (
            record_many(
                connection, HANDLER, [InboxEntry(i, "t.Happened", "t") for i in ids if i in new]
            )
            == 30
        )
    assert (log.count("SELECT"), log.count("INSERT")) == (1, 1)
    with db.connect() as connection:
        assert filter_new(connection, HANDLER, ids) == set()
        assert filter_new(connection, "other.handler", ids[:3]) == set(ids[:3])
        assert _count(connection) == 50


def test_empty_batches_touch_nothing(db: Engine) -> None:
    """An empty batch runs no statement."""
    log = StatementLog(db)
    with db.begin() as connection:
        assert filter_new(connection, HANDLER, []) == set()
        assert record_many(connection, HANDLER, []) == 0
    assert log.count("SELECT") + log.count("INSERT") == 0


def test_record_many_stores_a_repeated_event_once(db: Engine) -> None:
    """A batch that repeats an event id (a redelivery) stores it once."""
    event_id = uuid.uuid4()
    entries = [InboxEntry(event_id, "t.Happened", "t"), InboxEntry(event_id, "t.Happened", "t")]
    with db.begin() as connection:
        assert record_many(connection, HANDLER, entries) == 1
        assert _count(connection) == 1


def test_batch_size_is_unbounded(db: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL binds one array whatever the size; elsewhere filter_new splits ids into CHUNKs."""
    monkeypatch.setattr(inbox_module, "CHUNK", 4)
    ids = [uuid.uuid4() for _ in range(10)]
    log = StatementLog(db)
    with db.begin() as connection:
        assert record_many(connection, HANDLER, [InboxEntry(i) for i in ids[:6]]) == 6
        assert filter_new(connection, HANDLER, ids) == set(ids[6:])
    selects = 1 if db.dialect.name == "postgresql" else 3
    assert (log.count("INSERT"), log.count("SELECT")) == (1, selects)


def test_purge_deletes_old_rows_in_batches(db: Engine) -> None:
    """Purge removes only rows older than the cutoff, at most ``batch`` per DELETE, and commits each."""
    now = datetime(2030, 1, 10, tzinfo=UTC)
    with db.begin() as connection:
        record_many(
            connection,
            HANDLER,
            [InboxEntry(uuid.uuid4()) for _ in range(25)],
            processed_at=now - timedelta(days=8),
        )
        record_many(
            connection,
            HANDLER,
            [InboxEntry(uuid.uuid4()) for _ in range(5)],
            processed_at=now - timedelta(days=1),
        )
    log = StatementLog(db)
    with db.connect() as connection:
        assert purge(connection, timedelta(days=7), 10, now=now) == 25
        assert not connection.in_transaction()
    assert log.count("DELETE") == 3
    with db.connect() as connection:
        assert _count(connection) == 5
        assert purge(connection, timedelta(days=7), 10, now=now) == 0


def test_purge_rejects_an_empty_batch(db: Engine) -> None:
    """A batch size below one is a programming error."""
    with db.connect() as connection, pytest.raises(ValueError, match="batch"):
        purge(connection, timedelta(days=1), 0)


def test_concurrent_claims_on_postgres(postgres_url: str) -> None:
    """A second transaction claiming the same pair waits, then loses if the first commits and wins if it rolls back."""
    engine = create_engine(postgres_url)
    inbox.metadata.create_all(engine, tables=[inbox])
    try:
        for first_commits in (True, False):
            event_id = uuid.uuid4()
            with ThreadPoolExecutor(1) as pool, engine.connect() as first:
                assert claim(first, HANDLER, event_id)
                second = pool.submit(_claim_in_new_transaction, engine, event_id)
                assert _wait_for_lock_waiter(engine, second.done)
                first.commit() if first_commits else first.rollback()
                assert second.result(timeout=30) is (not first_commits)
            with engine.connect() as connection:
                assert already_applied(connection, HANDLER, event_id)
    finally:
        engine.dispose()


def _claim_in_new_transaction(engine: Engine, event_id: uuid.UUID) -> bool:
    with engine.begin() as connection:
        return claim(connection, HANDLER, event_id)


def _wait_for_lock_waiter(engine: Engine, finished: Callable[[], bool]) -> bool:
    """Poll until another session waits on a lock: True when seen, False if it finished first."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + 30
    with engine.connect() as watcher:
        while not finished() and time.monotonic() < deadline:
            if watcher.execute(query).scalar_one() > 0:
                return True
            watcher.rollback()
            time.sleep(0.005)
    return False


@pytest.mark.anyio
async def test_async_twins(database_url: str) -> None:
    """claim_async, filter_new_async and record_many_async run the same code through run_sync."""
    sync_engine = create_engine(database_url)
    inbox.metadata.create_all(sync_engine, tables=[inbox])
    sync_engine.dispose()
    engine = create_async_engine(async_url(database_url))
    try:
        ids = [uuid.uuid4() for _ in range(3)]
        async with engine.begin() as connection:
            assert await claim_async(connection, HANDLER, ids[0], "t.Happened", context="t")
            assert not await claim_async(connection, HANDLER, ids[0])
        async with AsyncSession(engine) as session, session.begin():
            assert await filter_new_async(session, HANDLER, ids) == set(ids[1:])
            assert await record_many_async(session, HANDLER, [InboxEntry(i) for i in ids[1:]]) == 2
        async with engine.connect() as connection:
            assert await filter_new_async(connection, HANDLER, ids) == set()
    finally:
        await engine.dispose()


def test_migration_0003_matches_the_inbox_and_flag_tables(database_url: str) -> None:
    """Revision 0003 creates eventseam_inbox and eventseam_flags exactly as the tables define them."""
    spec = importlib.util.spec_from_file_location("eventseam_migration_0003", MIGRATION)
    assert spec is not None
    assert spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    expected = MetaData(naming_convention=NAMING_CONVENTION)
    for table in (inbox, flags):
        table.to_metadata(expected)
    engine = create_engine(database_url)
    try:
        with (
            engine.begin() as connection,
            Operations.context(MigrationContext.configure(connection)),
        ):
            migration.upgrade()
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": True}
            )
            assert compare_metadata(context, expected) == []
            indexes = {ix["name"] for ix in inspect(connection).get_indexes("eventseam_inbox")}
            assert "ix_eventseam_inbox_processed_at" in indexes
        with (
            engine.begin() as connection,
            Operations.context(MigrationContext.configure(connection)),
        ):
            migration.downgrade()
        with engine.connect() as connection:
            assert not {"eventseam_inbox", "eventseam_flags"} & set(
                inspect(connection).get_table_names()
            )
    finally:
        engine.dispose()
