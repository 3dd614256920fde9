"""``async def`` views (flask[async]) publish on the request's db.session, from their event loop's thread."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import anyio.lowlevel
from flask import g, request
from sqlalchemy import select

from engine.integrations.flask import get_seam, publish
from outbox.table import outbox
from tests.flask.conftest import drain
from tests.flask.shop import RECEIVED, Order, OrderPlaced, db

if TYPE_CHECKING:
    from flask import Flask


def add_async_views(app: Flask) -> None:
    """POST /async/<id> places an order and says on which Session and thread (?fail=1 raises after publishing)."""

    @app.before_request
    def remember_request_thread() -> None:
        g.request_thread = threading.get_ident()
        g.request_session = db.session()

    @app.post("/async/<order_id>")
    async def place(order_id: str) -> dict[str, Any]:
        await anyio.lowlevel.checkpoint()  # a real coroutine, on the view's event loop
        db.session.add(Order(id=order_id))
        publish(OrderPlaced(aggregate_id=order_id, order_id=order_id))
        seen = db.session.execute(select(outbox.c.aggregateid)).scalars().all()
        answer = {
            "same_session": db.session() is g.request_session,
            "other_thread": threading.get_ident() != g.request_thread,
            "seen_before_commit": order_id in seen,
        }
        if request.args.get("fail"):
            raise RuntimeError("the view fails after publishing")
        db.session.commit()
        return answer


def test_async_view_publishes_on_the_request_session(app: Flask) -> None:
    """The async view's publish writes on the request's Session (in the view's loop thread) and dispatches after commit."""
    add_async_views(app)
    response = app.test_client().post("/async/G1")
    assert response.status_code == 200
    assert response.json == {"same_session": True, "other_thread": True, "seen_before_commit": True}
    with app.app_context():
        drain(get_seam())
        rows = db.session.execute(select(outbox.c.type, outbox.c.aggregateid)).all()
    assert ("flaskshop.OrderPlaced", "G1") in [tuple(row) for row in rows]
    assert RECEIVED.names() == ["flaskshop.OrderPlaced:G1", "flaskshop.InvoiceIssued:G1"]


def test_async_view_that_fails_writes_and_dispatches_nothing(app: Flask) -> None:
    """An async view raising after publish leaves no outbox row and reaches no handler."""
    add_async_views(app)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    assert app.test_client().post("/async/G2?fail=1").status_code == 500
    assert app.test_client().post("/async/G3").status_code == 200
    with app.app_context():
        drain(get_seam())
        ids = db.session.execute(select(outbox.c.aggregateid)).scalars().all()
        assert db.session.get(Order, "G2") is None
    assert "G2" not in ids
    assert "flaskshop.OrderPlaced:G2" not in RECEIVED.names()
