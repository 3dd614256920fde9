"""The example monolith as a Flask app, through Flask's test client: HTTP -> outbox -> handlers (-> Kafka)."""

from __future__ import annotations

import functools
import json
import threading
import time
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from sqlalchemy import select

from app.bootstrap import bootstrap, engine_of
from app.scenarios import EXPECTED, Kind, Outcome, plan
from app.web import create_app, db
from engine.integrations.flask import get_seam, get_state, stop_seam
from outbox.table import Status, outbox
from tests.kafka_broker import read_topic, relay_running, start_broker, unique_prefix

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from flask import Flask
    from flask.testing import FlaskClient

    from engine.events import DomainEvent
    from engine.types import Handler
    from outbox.bundled_broker import BundledBroker


class Gate:
    """A handler middleware holding every handler until ``open`` (makes a race deterministic)."""

    def __init__(self) -> None:
        self._open = threading.Event()

    def open(self) -> None:
        """Let the held handlers (and every later one) run."""
        self._open.set()

    def middleware(self, handle: Handler) -> Handler:
        """``Handler -> Handler``: wait for the gate (in a worker thread), then handle."""

        async def gated(event: DomainEvent) -> None:
            await anyio.to_thread.run_sync(self._open.wait)
            await handle(event)

        return gated


@pytest.fixture
def make_web_app(database_url: str) -> Iterator[Callable[..., Flask]]:
    """Build the example app on this test's fresh database (schema created); stopped afterwards."""
    apps: list[Flask] = []

    def make(gate: Gate | None = None, **config: Any) -> Flask:
        settings = {
            "SQLALCHEMY_DATABASE_URI": database_url,
            "EXAMPLE_CREATE_SCHEMA": True,
            # short group sessions: the test broker makes a rejoining group wait out stale members
            "EVENTSEAM_CONSUMER": {"session_timeout_ms": 3000, "heartbeat_interval_ms": 1000},
        }
        middlewares = [gate.middleware] if gate is not None else []
        app = create_app({**settings, **config}, middlewares=middlewares)
        apps.append(app)
        return app

    yield make
    for app in apps:
        stop_seam(app)
        with app.app_context():
            db.engine.dispose()


def settle(app: Flask) -> None:
    """Wait until the app's bus handled every event so far, follow-ups included."""
    with app.app_context():
        seam = get_seam()
        if seam.running:
            seam.bridge.call(seam.join)


def outcome(client: FlaskClient, order_id: str) -> Outcome:
    """``GET /orders/<id>`` as an Outcome (orders/payments/shipping statuses)."""
    body = client.get(f"/orders/{order_id}").json
    assert body is not None
    payment, label = body["payments"], body["shipping"]
    return Outcome(
        body["orders"]["status"],
        payment["status"] if payment else "-",
        label["status"] if label else "-",
    )


def outbox_events(app: Flask) -> list[tuple[str, str, str]]:
    """(event type, order id, status) of every outbox row, in write order."""
    with app.app_context():
        query = select(outbox.c.type, outbox.c.payload, outbox.c.status).order_by(outbox.c.seq)
        rows = db.session.execute(query).all()
    return [(row.type, json.loads(row.payload)["order_id"], row.status) for row in rows]


def place(client: FlaskClient, order_id: str, customer: str, total: int) -> dict[str, Any]:
    """``POST /orders``; asserts 201 and returns the answer."""
    body = {"order_id": order_id, "customer_id": customer, "total_cents": total}
    response = client.post("/orders", json=body)
    assert response.status_code == 201, response.json
    answer: dict[str, Any] = response.get_json()
    return answer


def test_orders_reach_their_final_state_in_every_context(
    make_web_app: Callable[..., Flask],
) -> None:
    """Orders placed over HTTP are in the outbox at once, and the handlers bring each to its expected state."""
    app = make_web_app()
    client = app.test_client()
    scenarios = [s for s in plan(12) if s.kind is not Kind.CANCELLED]
    for scenario in scenarios:
        answer = place(client, scenario.order_id, scenario.customer_id, scenario.total_cents)
        assert answer["status"] == "placed"
        written = [event for event in outbox_events(app) if event[1] == scenario.order_id]
        assert written[0] == ("orders.OrderPlaced", scenario.order_id, Status.LOCAL)
    settle(app)
    for scenario in scenarios:
        assert outcome(client, scenario.order_id) == scenario.expected, scenario
    follow_ups = {
        Outcome("shipped", "authorized", "created"): {
            "payments.PaymentAuthorized",
            "shipping.LabelCreated",
        },
        Outcome("rejected", "declined", "-"): {"payments.PaymentDeclined"},
    }
    events = outbox_events(app)
    for scenario in scenarios:
        types = {kind for kind, order, _ in events if order == scenario.order_id}
        assert types == {"orders.OrderPlaced", *follow_ups[scenario.expected]}


def test_default_sqlite_file_is_the_one_the_eventseam_commands_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without SQLALCHEMY_DATABASE_URI the app writes ./eventseam.db, the file `eventseam relay`
    and `eventseam status` open (app.bootstrap), not one in Flask's instance folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EVENTSEAM_DATABASE_URL", raising=False)
    app = create_app()
    try:
        place(app.test_client(), "ord-1", "cus_alice", 4200)
    finally:
        stop_seam(app)
        with app.app_context():
            db.engine.dispose()
    commands = bootstrap()
    try:
        with engine_of(commands).connect() as connection:
            types = connection.execute(select(outbox.c.type)).scalars().all()
    finally:
        engine_of(commands).dispose()
    assert "orders.OrderPlaced" in types


def test_cancel_right_after_checkout_cancels_everywhere(make_web_app: Callable[..., Flask]) -> None:
    """An order cancelled before payments and shipping heard of it ends cancelled, voided, voided."""
    gate = Gate()
    app = make_web_app(gate)
    client = app.test_client()
    place(client, "order-c1", "cus_alice", 4_200)
    response = client.post("/orders/order-c1/cancel", json={"reason": "changed my mind"})
    assert response.status_code == 200, response.json
    gate.open()
    settle(app)
    assert outcome(client, "order-c1") == EXPECTED[Kind.CANCELLED]
    body = client.get("/orders/order-c1").json
    assert body is not None
    assert body["orders"]["cancel_reason"] == "changed my mind"
    types = [kind for kind, _, _ in outbox_events(app)]
    assert types[:2] == ["orders.OrderPlaced", "orders.OrderCancelled"]


def test_refused_commands_publish_nothing(make_web_app: Callable[..., Flask]) -> None:
    """A shipped order cannot be cancelled (409); duplicates 409, unknown orders 404, bad bodies 422."""
    app = make_web_app()
    client = app.test_client()
    place(client, "order-s1", "cus_bob", 1_990)
    settle(app)
    before = outbox_events(app)
    refused = client.post("/orders/order-s1/cancel")
    assert refused.status_code == 409
    assert refused.json is not None
    assert refused.json["error"] == "OrderNotCancellableError"
    duplicate = {"order_id": "order-s1", "customer_id": "cus_bob", "total_cents": 1}
    assert client.post("/orders", json=duplicate).status_code == 409
    assert client.post("/orders/nope/cancel").status_code == 404
    assert client.get("/orders/nope").status_code == 404
    invalid = client.post("/orders", json={"customer_id": "", "total_cents": -1})
    assert invalid.status_code == 422
    assert invalid.json is not None
    assert {item["field"] for item in invalid.json["detail"]} == {"customer_id", "total_cents"}
    assert client.post("/orders", data="[1]", content_type="application/json").status_code == 422
    settle(app)
    assert outbox_events(app) == before


@pytest.fixture(scope="module")
def kafka_broker() -> Iterator[BundledBroker]:
    """The bundled Kafka-protocol broker for this module (fails, never skips, when it cannot start)."""
    broker = start_broker()
    yield broker
    broker.stop()


@pytest.mark.broker
def test_order_placed_over_http_reaches_kafka(
    make_web_app: Callable[..., Flask], kafka_broker: BundledBroker
) -> None:
    """With orders in dual mode, POST /orders ends as a record on the broker (relay, independent consumer) and in every context."""
    prefix = unique_prefix()
    app = make_web_app(
        EVENTSEAM_CONTEXTS={"orders": "dual"},
        EVENTSEAM_KAFKA={"bootstrap_servers": kafka_broker.bootstrap_servers},
        EVENTSEAM_RELAY={"topic_prefix": prefix, "poll_interval": 0.05, "lease_seconds": 2.0},
    )
    client = app.test_client()
    answer = place(client, "order-k1", "cus_carol", 3_300)
    assert outbox_events(app)[0] == ("orders.OrderPlaced", "order-k1", Status.PENDING)
    settings = get_state(app).config.settings

    async def relay_then_read() -> list[Any]:
        async with relay_running(settings):
            deadline = time.monotonic() + 60
            while any(status == Status.PENDING for *_, status in outbox_events(app)):
                assert time.monotonic() < deadline, "the relay did not publish the row"
                await anyio.sleep(0.05)
        read = functools.partial(read_topic, expected=1)
        return await read(kafka_broker.bootstrap_servers, f"{prefix}orders")

    records = anyio.run(relay_then_read, backend="asyncio")
    assert len(records) == 1
    record = records[0]
    assert record.key == b"order-k1"
    assert record.header("ce_type") == b"orders.OrderPlaced"
    assert record.header("ce_id") == answer["event_id"].encode()
    assert json.loads(record.value)["order_id"] == "order-k1"
    settle(app)
    assert outcome(client, "order-k1") == Outcome("shipped", "authorized", "created")
