"""publish() through Flask-SQLAlchemy: the outbox row joins db.session's transaction, dispatch follows the commit."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import event, select

from engine.integrations.flask import (
    OutsideSessionTransactionError,
    get_seam,
    publish,
    transaction,
)
from outbox.errors import OutsideTransactionError
from outbox.table import outbox
from tests.flask.conftest import drain
from tests.flask.shop import RECEIVED, Invoice, Order, OrderPlaced, db

if TYPE_CHECKING:
    from flask import Flask


class Undo(Exception):
    """Raised by a test to roll a transaction or savepoint back."""


def placed(order_id: str) -> OrderPlaced:
    """The OrderPlaced of ``order_id``."""
    return OrderPlaced(aggregate_id=order_id, order_id=order_id)


def outbox_rows(app: Flask) -> list[tuple[str, str]]:
    """(type, aggregateid) of every committed outbox row, in write order."""
    with app.app_context():
        query = select(outbox.c.type, outbox.c.aggregateid).order_by(outbox.c.seq)
        return [(row.type, row.aggregateid) for row in db.session.execute(query)]


def settle(app: Flask) -> None:
    """Wait until the app's bus handled everything handed to it so far."""
    with app.app_context():
        drain(get_seam())


def test_commit_writes_the_row_and_dispatches_after_it(app: Flask) -> None:
    """A committed publish leaves its outbox row, and its handlers (and their follow-ups) run."""
    with app.app_context():
        db.session.add(Order(id="A1"))
        publish(placed("A1"))
        assert RECEIVED.names() == []
        db.session.commit()
    settle(app)
    assert RECEIVED.names() == ["flaskshop.OrderPlaced:A1", "flaskshop.InvoiceIssued:A1"]
    assert outbox_rows(app) == [
        ("flaskshop.OrderPlaced", "A1"),
        ("flaskshop.InvoiceIssued", "A1"),
    ]
    with app.app_context():
        assert db.session.get(Invoice, "A1") is not None


def test_the_insert_runs_at_once_on_the_session(app: Flask) -> None:
    """The outbox INSERT executes on db.session during publish, not at a later flush."""
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    with app.app_context():
        db.session.execute(select(1))  # begins the transaction; nothing is dirty
        event.listen(db.engine, "before_cursor_execute", record)
        try:
            publish(placed("A2"))
            inserted = [s for s in statements if "INSERT INTO eventseam_outbox" in s]
        finally:
            event.remove(db.engine, "before_cursor_execute", record)
        assert len(inserted) == 1
        visible = db.session.execute(select(outbox.c.aggregateid)).scalars().all()
        assert visible == ["A2"]
        db.session.commit()
    assert outbox_rows(app)[0] == ("flaskshop.OrderPlaced", "A2")


def test_rollback_writes_and_dispatches_nothing(app: Flask) -> None:
    """A rolled-back transaction leaves no outbox row and reaches no handler."""
    with app.app_context():
        db.session.add(Order(id="B1"))
        publish(placed("B1"))
        db.session.rollback()
        db.session.add(Order(id="B2"))
        publish(placed("B2"))
        db.session.commit()
    settle(app)
    assert outbox_rows(app) == [
        ("flaskshop.OrderPlaced", "B2"),
        ("flaskshop.InvoiceIssued", "B2"),
    ]
    assert "flaskshop.OrderPlaced:B1" not in RECEIVED.names()


def test_savepoint_rollback_drops_only_the_inner_events(app: Flask) -> None:
    """Events published inside a rolled-back begin_nested() are neither written nor dispatched."""
    with app.app_context():
        db.session.add(Order(id="C-outer"))
        publish(placed("C-outer"))
        with suppress(Undo), db.session.begin_nested():
            db.session.add(Order(id="C-inner"))
            publish(placed("C-inner"))
            raise Undo
        with db.session.begin_nested():
            publish(placed("C-kept"))
        db.session.commit()
    settle(app)
    placed_rows = [row for row in outbox_rows(app) if row[0] == "flaskshop.OrderPlaced"]
    assert placed_rows == [
        ("flaskshop.OrderPlaced", "C-outer"),
        ("flaskshop.OrderPlaced", "C-kept"),
    ]
    heard = RECEIVED.names()
    assert "flaskshop.OrderPlaced:C-inner" not in heard
    assert {"flaskshop.OrderPlaced:C-outer", "flaskshop.OrderPlaced:C-kept"} <= set(heard)


def test_transaction_commits_or_rolls_back_db_session(app: Flask) -> None:
    """transaction() commits the unit's writes and events, and rolls both back on an error."""
    with app.app_context():
        with transaction() as tx:
            tx.session.add(Order(id="D1"))
            tx.publish(placed("D1"))
        with suppress(Undo), transaction() as tx:
            tx.session.add(Order(id="D2"))
            tx.publish(placed("D2"))
            raise Undo
    settle(app)
    assert [row for row in outbox_rows(app) if row[1] == "D2"] == []
    assert RECEIVED.names() == ["flaskshop.OrderPlaced:D1", "flaskshop.InvoiceIssued:D1"]


def test_publish_without_an_open_transaction_is_refused(app: Flask) -> None:
    """A session that has not begun a transaction refuses publish, with nothing written."""
    with app.app_context():
        with pytest.raises(
            OutsideSessionTransactionError, match=r"open transaction on db\.session"
        ):
            publish(placed("E1"))
        assert not db.session().in_transaction()
    assert outbox_rows(app) == []


def test_publish_without_an_app_context_is_refused(app: Flask) -> None:
    """Outside an application context there is no db.session: publish says so."""
    with pytest.raises(OutsideTransactionError, match="application context") as caught:
        publish(placed("E2"))
    assert isinstance(caught.value, OutsideSessionTransactionError)
    assert caught.value.in_app_context is False


def test_handlers_are_reached_from_concurrent_request_threads(app: Flask) -> None:
    """Views publishing from several request threads at once reach every handler once per event."""

    @app.post("/orders/<order_id>")
    def place(order_id: str) -> dict[str, str]:
        db.session.add(Order(id=order_id))
        publish(placed(order_id))
        db.session.commit()
        return {"order_id": order_id}

    def post(number: int) -> int:
        return app.test_client().post(f"/orders/F{number:02d}").status_code

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(post, range(24)))
    assert statuses == [200] * 24
    settle(app)
    heard = RECEIVED.names()
    for number in range(24):
        assert heard.count(f"flaskshop.OrderPlaced:F{number:02d}") == 1
        assert heard.count(f"flaskshop.InvoiceIssued:F{number:02d}") == 1
    assert len(outbox_rows(app)) == 48
