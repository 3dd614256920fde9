"""The outbox writer on a sync Session and Connection, against SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
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
    select,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from engine.codec import EncodedEvent, decode_headers, encode
from engine.events import DomainEvent
from engine.modes import Mode
from outbox.errors import OutsideTransactionError
from outbox.murmur2 import key_hash
from outbox.table import metadata as outbox_metadata
from outbox.table import outbox
from outbox.writer import COLUMNS, MAX_ROWS_PER_STATEMENT, build_rows, compiled_insert, write

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

business = MetaData()
orders = Table("test_orders", business, Column("id", String(36), primary_key=True))

Target = Session | Connection


class OrderPlaced(DomainEvent, name="test.OrderPlaced", version=1):
    """A test event."""

    order_id: str
    note: str


def make_records(count: int, *, aggregate_id: str = "Zürich-1") -> list[EncodedEvent]:
    """``count`` encoded events with non-ASCII data and optional headers set on the first one."""
    records = []
    for i in range(count):
        event = OrderPlaced(aggregate_id=aggregate_id, order_id=f"o-{i}", note="café ☕")
        if i == 0:
            event = event.model_copy(
                update={
                    "correlation_id": uuid.uuid4(),
                    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                }
            )
        records.append(encode(event.model_copy(update={"source": "test"})))
    return records


class StatementLog:
    """Statements the engine sends to the database, as seen by ``before_cursor_execute``."""

    def __init__(self, engine: Engine) -> None:
        self.statements: list[tuple[str, Any, bool]] = []
        self._engine = engine
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(
        self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        self.statements.append((statement, params, many))

    def outbox_inserts(self) -> list[tuple[str, Any, bool]]:
        """The statements that inserted into the outbox."""
        return [
            s
            for s in self.statements
            if s[0].lstrip().upper().startswith("INSERT INTO EVENTSEAM_OUTBOX")
        ]

    def close(self) -> None:
        """Stop listening."""
        event.remove(self._engine, "before_cursor_execute", self._record)


def rows_in(parameters: Any) -> int:
    """How many rows an outbox INSERT's parameters carry (a VALUES list, or one array per column)."""
    values = list(parameters.values()) if isinstance(parameters, dict) else list(parameters)
    if values and isinstance(values[0], list):
        return len(values[0])
    return len(values) // len(COLUMNS)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a fresh database holding the business table and the outbox."""
    engine = create_engine(database_url)
    business.create_all(engine)
    outbox_metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["session", "connection"])
def kind(request: pytest.FixtureRequest) -> str:
    """Which sync entry point the test drives."""
    return str(request.param)


@contextmanager
def begun(engine: Engine, kind: str) -> Iterator[Target]:
    """A Session or Connection with an open transaction; the test commits or rolls back."""
    if kind == "session":
        with Session(engine) as session:
            session.begin()
            yield session
    else:
        with engine.connect() as connection:
            connection.begin()
            yield connection


def add_order(target: Target, order_id: str) -> None:
    """The business write: one row in the test's own table."""
    target.execute(insert(orders).values(id=order_id))


def order_ids(engine: Engine) -> set[str]:
    """Ids of the committed business rows."""
    with engine.connect() as connection:
        return set(connection.scalars(select(orders.c.id)))


def outbox_ids(engine: Engine) -> list[uuid.UUID]:
    """Ids of the committed outbox rows, in write order."""
    with engine.connect() as connection:
        return list(connection.scalars(select(outbox.c.id).order_by(outbox.c.seq)))


def ids(records: Sequence[EncodedEvent]) -> list[uuid.UUID]:
    """Event ids of ``records``."""
    return [r.event_id for r in records]


def test_commit_keeps_business_row_and_events(engine: Engine, kind: str) -> None:
    """A committed transaction keeps the business row and every event written in it."""
    records = make_records(3)
    with begun(engine, kind) as target:
        add_order(target, "order-1")
        write(target, records, Mode.DUAL)
        target.commit()
    assert order_ids(engine) == {"order-1"}
    assert outbox_ids(engine) == ids(records)


def test_rollback_removes_business_row_and_events(engine: Engine, kind: str) -> None:
    """A rolled-back transaction leaves neither the business row nor the events."""
    with begun(engine, kind) as target:
        add_order(target, "order-1")
        write(target, make_records(3), Mode.DUAL)
        target.rollback()
    assert order_ids(engine) == set()
    assert outbox_ids(engine) == []


def test_rolled_back_savepoint_drops_only_its_events(engine: Engine, kind: str) -> None:
    """Events written inside a rolled-back SAVEPOINT vanish; those written outside it commit."""
    before, inside, after = make_records(2), make_records(3), make_records(1)
    with begun(engine, kind) as target:
        add_order(target, "order-1")
        write(target, before, Mode.BROKER)
        savepoint = target.begin_nested()
        add_order(target, "order-2")
        write(target, inside, Mode.BROKER)
        savepoint.rollback()
        write(target, after, Mode.BROKER)
        target.commit()
    assert order_ids(engine) == {"order-1"}
    assert outbox_ids(engine) == ids(before) + ids(after)


def test_batch_is_one_insert_statement(engine: Engine, kind: str) -> None:
    """Ten events go to the database as one multi-row INSERT statement, not an executemany."""
    log = StatementLog(engine)
    try:
        with begun(engine, kind) as target:
            add_order(target, "order-1")
            write(target, make_records(10), Mode.DUAL)
            target.commit()
    finally:
        log.close()
    inserts = log.outbox_inserts()
    assert len(inserts) == 1
    _, parameters, executemany = inserts[0]
    assert not executemany
    assert rows_in(parameters) == 10
    assert len(outbox_ids(engine)) == 10


def test_batch_over_the_limit_is_split_in_the_same_transaction(engine: Engine) -> None:
    """A batch larger than MAX_ROWS_PER_STATEMENT takes several INSERTs, all in one transaction."""
    count = MAX_ROWS_PER_STATEMENT * 2 + 1
    records = make_records(count)
    log = StatementLog(engine)
    try:
        with engine.begin() as connection:
            write(connection, records, Mode.DUAL)
    finally:
        log.close()
    assert len(log.outbox_inserts()) == 3
    assert outbox_ids(engine) == ids(records)


def test_outside_transaction_is_refused(engine: Engine, kind: str) -> None:
    """A Session or Connection without an open transaction gets OutsideTransactionError."""
    if kind == "session":
        with (
            Session(engine) as session,
            pytest.raises(OutsideTransactionError, match=r"session\.begin\(\)"),
        ):
            write(session, make_records(1), Mode.DUAL)
    else:
        with (
            engine.connect() as connection,
            pytest.raises(OutsideTransactionError, match=r"engine\.begin\(\)"),
        ):
            write(connection, make_records(1), Mode.DUAL)
    assert outbox_ids(engine) == []


def test_autocommit_isolation_is_refused(database_url: str, kind: str) -> None:
    """A connection in AUTOCOMMIT isolation is refused even though it reports a transaction."""
    autocommit = create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with (
            begun(autocommit, kind) as target,
            pytest.raises(OutsideTransactionError, match="AUTOCOMMIT"),
        ):
            write(target, make_records(1), Mode.DUAL)
    finally:
        autocommit.dispose()


def test_autocommit_execution_option_is_refused(engine: Engine) -> None:
    """A connection switched to AUTOCOMMIT with execution_options is refused."""
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT")
        connection.begin()
        with pytest.raises(OutsideTransactionError, match="AUTOCOMMIT"):
            write(connection, make_records(1), Mode.DUAL)


@pytest.mark.parametrize("count", [3, 12])
def test_rows_hold_the_encoded_bytes(engine: Engine, kind: str, count: int) -> None:
    """Each row holds the codec's exact bytes, the key hash, and the status its mode implies."""
    records = make_records(count)
    modes = [Mode.LOCAL, Mode.DUAL, Mode.BROKER] * (count // 3)
    with begun(engine, kind) as target:
        write(target, records, modes)
        target.commit()
    with engine.connect() as connection:
        rows = connection.execute(select(outbox).order_by(outbox.c.seq)).mappings().all()
    assert [row["status"] for row in rows] == ["local", "pending", "pending"] * (count // 3)
    assert [row["mode"] for row in rows] == ["local", "dual", "broker"] * (count // 3)
    for row, record in zip(rows, records, strict=True):
        assert row["id"] == record.event_id
        assert row["aggregatetype"] == record.context == "test"
        assert row["aggregateid"] == record.aggregate_id
        assert row["type"] == record.event_type == "test.OrderPlaced"
        assert row["version"] == record.version == 1
        assert row["payload"] == record.value
        assert decode_headers(row["headers"]) == record.headers
        assert row["keyhash"] == key_hash(record.key)
        assert row["attempts"] == 0
        assert row["last_error"] is None
        assert row["published_at"] is None
        assert row["created_at"] is not None
        occurred = row["occurred_at"]
        assert (occurred if occurred.tzinfo else occurred.replace(tzinfo=UTC)) == record.occurred_at


def test_empty_batch_sends_nothing(engine: Engine) -> None:
    """Writing no records sends no statement."""
    log = StatementLog(engine)
    try:
        with engine.begin() as connection:
            write(connection, [], Mode.DUAL)
    finally:
        log.close()
    assert log.outbox_inserts() == []


def test_build_rows_fills_every_written_column() -> None:
    """build_rows gives one dict per record with the codec's bytes and the mode's status."""
    records = make_records(2)
    rows = build_rows(records, [Mode.LOCAL, Mode.BROKER])
    assert [tuple(row) for row in rows] == [COLUMNS, COLUMNS]
    first = rows[0]
    assert first["id"] == records[0].event_id
    assert first["payload"] == records[0].value
    assert decode_headers(first["headers"]) == records[0].headers
    assert first["keyhash"] == key_hash(records[0].key)
    assert (first["mode"], first["status"], rows[1]["mode"], rows[1]["status"]) == (
        "local",
        "local",
        "broker",
        "pending",
    )
    assert first["attempts"] == 0
    assert isinstance(first["occurred_at"], datetime)
    assert [row["status"] for row in build_rows(records, Mode.DUAL)] == ["pending", "pending"]


def test_build_rows_refuses_mismatched_modes() -> None:
    """A modes sequence must have one Mode per record."""
    with pytest.raises(ValueError, match="one per record"):
        build_rows(make_records(2), [Mode.DUAL])


def test_created_at_is_set_by_the_database(engine: Engine) -> None:
    """created_at comes from the server default, not from the writer."""
    with engine.begin() as connection:
        write(connection, make_records(1), Mode.DUAL)
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).where(outbox.c.created_at.is_not(None))) == 1


def dialect_of(url: str, **kwargs: Any) -> Dialect:
    """A dialect of ``url``'s backend and driver, without an engine."""
    factory: Callable[..., Dialect] = make_url(url).get_dialect()
    return factory(**kwargs)


def test_compiled_insert_forms() -> None:
    """psycopg gets the unnest form from 5 rows on (unless refused); other dialects a VALUES list."""
    psycopg_dialect = dialect_of("postgresql+psycopg://")
    assert "VALUES" in compiled_insert(psycopg_dialect, 4).sql
    assert "unnest(" in compiled_insert(psycopg_dialect, 5).sql
    assert "VALUES" in compiled_insert(psycopg_dialect, 5, allow_unnest=False).sql
    assert "VALUES" in compiled_insert(dialect_of("postgresql+psycopg2://"), 10).sql
    assert "VALUES" in compiled_insert(sqlite.dialect(), 10).sql
    assert compiled_insert(sqlite.dialect(), 3).sql.count("?") == 3 * len(COLUMNS)


def test_compiled_insert_positional_parameters_follow_column_order() -> None:
    """A positional paramstyle (Django's "format") gets a flat tuple, row by row, column by column."""
    dialect = dialect_of("postgresql+psycopg://", paramstyle="format")
    statement = compiled_insert(dialect, 2, allow_unnest=False)
    rows = [tuple(build_rows(make_records(1), Mode.DUAL)[0].values()) for _ in range(2)]
    parameters = statement.parameters(rows)
    assert isinstance(parameters, tuple)
    assert statement.sql.count("%s") == len(parameters) == 2 * len(COLUMNS)
    assert parameters[len(COLUMNS)] == rows[1][0]


def test_scoped_session_is_accepted(engine: Engine) -> None:
    """A scoped_session (Flask-SQLAlchemy's db.session) writes through its current Session."""
    session = scoped_session(sessionmaker(engine))
    try:
        with session.begin():
            write(session, make_records(2), Mode.DUAL)
    finally:
        session.remove()
    assert len(outbox_ids(engine)) == 2


def test_other_targets_are_refused() -> None:
    """Anything but a Session or Connection is a TypeError."""
    with pytest.raises(TypeError, match="Session or Connection"):
        write(object(), make_records(1), Mode.DUAL)  # type: ignore[arg-type]
