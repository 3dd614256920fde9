"""The example monolith as a web application: Flask, Flask-SQLAlchemy and eventseam's Flask extension.

    app = create_app()          # database: SQLALCHEMY_DATABASE_URI, else the database_url setting
                                # (a relative SQLite path: in the working directory, as the
                                # eventseam commands read it; not Flask's instance folder)

    POST /orders                {"customer_id": "cus_alice", "total_cents": 4200}   -> 201
                                (optional: "order_id" to make retries idempotent, "currency")
    POST /orders/<id>/cancel    {"reason": "..."} (optional)                         -> 200
    GET  /orders/<id>           the order as orders, payments and shipping see it    -> 200

Every answer is JSON; errors are ``{"error": ..., "detail": ...}`` with 404 (no such order),
409 (duplicate order id, or an order past cancelling) or 422 (an invalid body). A view runs the
orders context's use case in ``transaction()``: the order row and its event's outbox row commit
together in ``db.session``'s transaction, and payments and shipping react after the commit, in
the engine's threads. ``GET`` reads each context's table (the application's read side).

``create_app`` wires and starts nothing that runs: the bus starts in the process that publishes
(the first request, or gunicorn's ``post_worker_init`` hook in app/gunicorn_conf.py).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from flask import Blueprint, Flask, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from pydantic import ValidationError
from sqlalchemy import event, make_url, select

from app.bootstrap import CONTEXTS, SQLITE_BUSY_TIMEOUT_SECONDS, create_tables
from contexts.orders.commands import CancelOrder, PlaceOrder
from contexts.orders.errors import (
    DuplicateOrderError,
    OrderNotCancellableError,
    OrderNotFoundError,
    OrdersError,
)
from contexts.orders.models import Order
from contexts.orders.service import cancel_order, place_order
from contexts.payments.models import Payment
from contexts.shipping.models import Label
from engine.integrations.flask import FlaskEventSeam, transaction
from engine.settings import load_settings

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from flask.typing import ResponseReturnValue
    from sqlalchemy import Engine

    from engine.types import Middleware

#: Flask-SQLAlchemy; the contexts' models keep their own declarative bases (and tables).
db = SQLAlchemy()
orders_api = Blueprint("orders_api", __name__)

#: app.config key: create the contexts' tables and eventseam's schema at start-up (default:
#: on SQLite only, the embedded example database; elsewhere that is an operator's job).
CREATE_SCHEMA: Final = "EXAMPLE_CREATE_SCHEMA"
_STATUS_OF: Final[dict[type[OrdersError], int]] = {
    OrderNotFoundError: 404,
    DuplicateOrderError: 409,
    OrderNotCancellableError: 409,
}


def create_app(
    config: Mapping[str, Any] | None = None, *, middlewares: Sequence[Middleware] = ()
) -> Flask:
    """The example monolith's Flask app; ``config`` updates ``app.config`` (EVENTSEAM_* included).

    ``middlewares`` wrap every handler (``Handler -> Handler``). Raises FlaskConfigError when
    the eventseam settings cannot be used.
    """
    app = Flask("app")
    app.config.update(config or {})
    app.config.setdefault(
        "SQLALCHEMY_DATABASE_URI", in_working_directory(load_settings().database_url)
    )
    sqlite = str(app.config["SQLALCHEMY_DATABASE_URI"]).startswith("sqlite")
    if sqlite:  # threads and workers write one file: wait for the lock instead of failing
        options = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
        options["connect_args"] = {
            "timeout": SQLITE_BUSY_TIMEOUT_SECONDS,
            **options.get("connect_args", {}),
        }
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = options
    db.init_app(app)
    FlaskEventSeam(app, db, contexts=CONTEXTS, middlewares=middlewares)
    app.register_blueprint(orders_api)
    with app.app_context():
        if sqlite:
            event.listen(db.engine, "connect", _sqlite_pragmas)
        if app.config.get(CREATE_SCHEMA, sqlite):
            create_tables(db.engine)
    return app


def in_working_directory(url: str) -> str:
    """``url`` with a relative SQLite path made absolute from the working directory.

    Flask-SQLAlchemy puts a relative SQLite file in the app's instance folder; the eventseam
    commands (``eventseam relay``, ``status``...) and the demo open it in the working
    directory. The default ``sqlite:///eventseam.db`` must be one file for all of them.
    """
    parsed = make_url(url)
    path = parsed.database
    if parsed.get_backend_name() != "sqlite" or not path or path == ":memory:":
        return url
    if path.startswith("file:") or Path(path).is_absolute():
        return url
    return parsed.set(database=str(Path(path).resolve())).render_as_string(hide_password=False)


@orders_api.post("/orders")
def place() -> ResponseReturnValue:
    """Place an order (OrderPlaced); 201 with its id and event id."""
    body = dict(_json_body())
    body.setdefault("order_id", f"ord_{secrets.token_hex(6)}")
    command = PlaceOrder.model_validate(body)
    with transaction() as tx:
        placed = place_order(tx, command)
    answer = {"order_id": placed.order_id, "status": "placed", "event_id": str(placed.event_id)}
    return answer, 201, {"Location": f"/orders/{placed.order_id}"}


@orders_api.post("/orders/<order_id>/cancel")
def cancel(order_id: str) -> ResponseReturnValue:
    """Cancel an order that has not shipped (OrderCancelled); 404 or 409 otherwise."""
    command = CancelOrder.model_validate({**_json_body(), "order_id": order_id})
    with transaction() as tx:
        cancelled = cancel_order(tx, command)
    return {"order_id": order_id, "status": "cancelled", "event_id": str(cancelled.event_id)}


@orders_api.get("/orders/<order_id>")
def show(order_id: str) -> ResponseReturnValue:
    """The order as each context sees it (``null`` where a context has no row for it)."""
    order = db.session.get(Order, order_id)
    if order is None:
        raise OrderNotFoundError(order_id)
    payment = db.session.scalars(select(Payment).where(Payment.order_id == order_id)).first()
    label = db.session.scalars(select(Label).where(Label.order_id == order_id)).first()
    return {
        "order_id": order.id,
        "customer_id": order.customer_id,
        "total_cents": order.total_cents,
        "currency": order.currency,
        "orders": {"status": order.status.value, "cancel_reason": order.cancel_reason},
        "payments": None
        if payment is None
        else {
            "status": payment.status.value,
            "payment_id": payment.id,
            "decline_reason": payment.decline_reason,
        },
        "shipping": None
        if label is None
        else {
            "status": label.status.value,
            "label_id": label.id,
            "tracking_number": label.tracking_number,
        },
    }


@orders_api.errorhandler(OrdersError)
def refused(exc: OrdersError) -> ResponseReturnValue:
    """A command the orders context refused: 404 or 409, nothing published."""
    return jsonify(error=type(exc).__name__, detail=str(exc)), _STATUS_OF.get(type(exc), 409)


@orders_api.errorhandler(ValidationError)
def invalid(exc: ValidationError) -> ResponseReturnValue:
    """A body the command rejects: 422 with pydantic's errors."""
    detail = [
        {"field": ".".join(map(str, error["loc"])), "message": error["msg"]}
        for error in exc.errors()
    ]
    return jsonify(error="invalid request", detail=detail), 422


def _json_body() -> Mapping[str, Any]:
    """The request's JSON object (empty without a body); a ValidationError-like 422 otherwise."""
    if not request.get_data():
        return {}
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValidationError.from_exception_data(
            "request body", [{"type": "dict_type", "loc": ("body",), "input": body}]
        )
    return body


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    """WAL: request threads, handler threads and other workers read while one writes."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def engine_of(app: Flask) -> Engine:
    """Flask-SQLAlchemy's engine of ``app`` (tests and scripts read the database through it)."""
    with app.app_context():
        return db.engine
