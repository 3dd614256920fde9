"""``inbox.claim_many`` (the consumer runner's batch claim) on real SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import create_engine, event, func, insert, select
from sqlalchemy.orm import Session

from engine.events import DomainEvent
from engine.inbox import claim_many, filter_new
from outbox.inbox_table import inbox

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy import Connection, Engine

HANDLER = "billing.bill_on_meter_read"


class MeterRead(DomainEvent, name="tests.claimmany.MeterRead", version=1):
    """A meter was read."""

    kwh: int


class MeterReset(DomainEvent, name="tests.claimmany.MeterReset", version=1):
    """A meter was reset."""


def reads(count: int, source: str | None = "meter") -> list[DomainEvent]:
    return [MeterRead(aggregate_id=f"m{n}", kwh=n, source=source) for n in range(count)]


@pytest.fixture
def db(database_url: str) -> Iterator[Engine]:
    """An engine on a fresh database holding the inbox table."""
    engine = create_engine(database_url)
    inbox.metadata.create_all(engine, tables=[inbox])
    yield engine
    engine.dispose()


def rows(connection: Connection) -> dict[Any, tuple[str | None, str | None]]:
    query = select(inbox.c.event_id, inbox.c.event_type, inbox.c.context).where(
        inbox.c.handler == HANDLER
    )
    return {row.event_id: (row.event_type, row.context) for row in connection.execute(query)}


def test_claims_new_events_and_records_them(db: Engine) -> None:
    """Every new event is claimed and recorded with its wire name and context."""
    events = reads(300)
    with db.begin() as connection:
        assert claim_many(connection, HANDLER, events) == {e.event_id for e in events}
    with db.connect() as connection:
        assert rows(connection) == {e.event_id: (e.event_name, "meter") for e in events}
        assert filter_new(connection, HANDLER, [e.event_id for e in events]) == set()


def test_events_already_recorded_are_not_claimed_again(db: Engine) -> None:
    """A redelivered batch claims only what the inbox does not hold yet."""
    events = reads(50)
    with db.begin() as connection:
        claim_many(connection, HANDLER, events[:20])
    with db.begin() as connection:
        assert claim_many(connection, HANDLER, events) == {e.event_id for e in events[20:]}
        assert claim_many(connection, HANDLER, events) == set()  # claimed in this transaction
    with db.begin() as connection:
        assert claim_many(connection, "other.handler", events[:3]) == {
            e.event_id for e in events[:3]
        }
        assert connection.execute(select(func.count()).select_from(inbox)).scalar_one() == 53


def test_a_redelivery_in_a_session_leaves_its_transaction_usable(db: Engine) -> None:
    """On a Session (as the consumer runner claims), a batch holding recorded ids claims the
    others, and the transaction goes on: later writes in it commit with the claims."""
    events = reads(12)
    with Session(db) as session, session.begin():
        claim_many(session, HANDLER, events[:5])
    with Session(db) as session, session.begin():
        assert claim_many(session, HANDLER, events) == {e.event_id for e in events[5:]}
        session.execute(insert(inbox).values(handler="after.claim", event_id=events[0].event_id))
    with db.connect() as connection:
        assert len(rows(connection)) == 12
        assert (
            connection.execute(
                select(func.count()).select_from(inbox).where(inbox.c.handler == "after.claim")
            ).scalar_one()
            == 1
        )


def test_a_repeated_event_is_claimed_once(db: Engine) -> None:
    """An event twice in one batch gives one claim and one row."""
    events = reads(3)
    with db.begin() as connection:
        claimed = claim_many(connection, HANDLER, [events[0], *events, events[2]])
    assert claimed == {e.event_id for e in events}
    with db.connect() as connection:
        assert len(rows(connection)) == 3


def test_mixed_types_and_contexts_keep_their_own(db: Engine) -> None:
    """Each row carries its own event's wire name and context (a missing context stays NULL)."""
    events = [
        *reads(2),
        MeterReset(aggregate_id="m9", source="ops"),
        *reads(2, source=None),
    ]
    with db.begin() as connection:
        assert claim_many(connection, HANDLER, events) == {e.event_id for e in events}
    with db.connect() as connection:
        assert rows(connection) == {e.event_id: (e.event_name, e.source) for e in events}


def test_a_rollback_frees_the_claims(db: Engine) -> None:
    """Claims roll back with the transaction: the next attempt claims the events again."""
    events = reads(10)
    with db.connect() as connection:
        transaction = connection.begin()
        assert len(claim_many(connection, HANDLER, events)) == 10
        transaction.rollback()  # as when the handler fails
    with db.begin() as connection:
        assert claim_many(connection, HANDLER, events) == {e.event_id for e in events}


def test_an_empty_batch_runs_no_statement(db: Engine) -> None:
    """Nothing to claim, nothing sent."""
    seen: list[str] = []
    event.listen(db, "before_cursor_execute", lambda *args: seen.append(args[2]))
    with db.begin() as connection:
        assert claim_many(connection, HANDLER, []) == set()
    assert seen == []


def test_one_statement_on_postgresql(postgres_url: str) -> None:
    """PostgreSQL claims a whole batch, mixed or not, with one INSERT (in a savepoint)."""
    engine = create_engine(postgres_url)
    inbox.metadata.create_all(engine, tables=[inbox])
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    try:
        with engine.begin() as connection:
            claim_many(connection, HANDLER, reads(500))
            claim_many(connection, HANDLER, [*reads(5), MeterReset(aggregate_id="m", source="x")])
        assert [statement.split()[0] for statement in seen] == ["SAVEPOINT", "WITH", "RELEASE"] * 2
    finally:
        engine.dispose()


def test_a_concurrent_claimer_gets_what_the_first_did_not_commit(db: Engine) -> None:
    """Overlapping batches in two transactions: each event is claimed by exactly one of them.

    The second claimer waits for the first transaction's rows: it gets none of them when the
    first commits, all of them when the first rolls back. On SQLite it waits on the database's
    write lock, and the pairs the first one committed meanwhile are skipped, not an
    IntegrityError (a look-up before the insert would have seen them as new).
    """
    committed, rolled_back = reads(40), reads(5)
    with ThreadPoolExecutor(1) as pool, db.connect() as first:
        with first.begin():
            assert len(claim_many(first, HANDLER, committed[:30])) == 30
            with statement_done_elsewhere(db) as done:
                later = pool.submit(claim_in_new_transaction, db, committed)
                # A look-up the second claimer makes runs now; its insert waits for the lock.
                done.wait(timeout=1)
        assert later.result(timeout=60) == {e.event_id for e in committed[30:]}
        transaction = first.begin()
        assert len(claim_many(first, HANDLER, rolled_back)) == 5
        racing = pool.submit(claim_in_new_transaction, db, rolled_back)
        transaction.rollback()
        assert racing.result(timeout=60) == {e.event_id for e in rolled_back}


@contextmanager
def statement_done_elsewhere(engine: Engine) -> Iterator[threading.Event]:
    """An Event set once a statement of another thread on ``engine`` has run."""
    done, here = threading.Event(), threading.get_ident()

    def ran(*args: object) -> None:
        if threading.get_ident() != here:
            done.set()

    event.listen(engine, "after_cursor_execute", ran)
    try:
        yield done
    finally:
        event.remove(engine, "after_cursor_execute", ran)


def claim_in_new_transaction(engine: Engine, events: list[DomainEvent]) -> set[Any]:
    """``claim_many`` in a transaction of its own, committed."""
    with engine.begin() as connection:
        return claim_many(connection, HANDLER, events)
