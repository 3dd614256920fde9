"""The example monolith end to end: ``python -m app demo`` and the contexts' final states."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest
from rich.console import Console
from sqlalchemy.orm import Session

from app.bootstrap import bootstrap, create_tables, database_engine, engine_of
from app.demo import LOCAL_STEPS, Demo, in_transaction, run_demo, run_steps
from app.migration import BrokerUnavailableError, KafkaSide
from app.observe import HandlerLog
from app.scenarios import EXPECTED, Kind, Outcome, plan
from app.state import read_events, read_states
from contexts.orders.commands import CancelOrder, PlaceOrder
from contexts.orders.errors import OrderNotFoundError
from contexts.orders.events import OrderCancelled, OrderPlaced
from contexts.orders.service import cancel_order, place_order
from contexts.payments.events import PaymentAuthorized, PaymentVoided
from contexts.payments.models import Payment, PaymentStatus
from contexts.payments.service import settle_order, void_payment
from contexts.shipping.events import LabelCreated, LabelVoided
from contexts.shipping.models import Label, LabelStatus
from contexts.shipping.service import create_label, void_label
from engine.settings import load_settings
from outbox.bundled_broker import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

    from engine.events import DomainEvent

REPO_ROOT = Path(__file__).resolve().parents[2]


def demo_environment() -> dict[str, str]:
    """The current environment without EVENTSEAM_* variables, with the checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("EVENTSEAM_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def final_rows(output: str) -> dict[str, list[str]]:
    """Cells of the final-state table by order id: customer, total, scenario, 3 statuses, verdict.

    The full path's table starts with the step that placed the order: it comes last here.
    """
    rows: dict[str, list[str]] = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if cells and cells[0].startswith("order-"):
            rows[cells[0]] = cells[1:]
        elif len(cells) > 1 and cells[1].startswith("order-"):
            rows[cells[1]] = [*cells[2:], cells[0]]
    return rows


def run_demo_command(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """``python -m app demo OPTIONS`` in ``tmp_path`` without EVENTSEAM_* variables."""
    return subprocess.run(
        [sys.executable, "-m", "app", "demo", *options],
        cwd=tmp_path,
        env=demo_environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def assert_every_order_as_expected(output: str, count: int) -> dict[str, list[str]]:
    """The final table lists ``count`` orders, each in its scenario's expected state."""
    assert f"All {count} orders reached their expected state." in output
    rows = final_rows(output)
    assert sorted(rows) == [s.order_id for s in plan(count)]
    for scenario in plan(count):
        _customer, _total, kind, order, payment, label, verdict, *_step = rows[scenario.order_id]
        assert kind == scenario.kind.value
        assert Outcome(order, payment, label) == scenario.expected
        assert verdict == "yes"
    return rows


def test_demo_command_on_the_local_path_exits_0_with_every_order_as_expected(
    tmp_path: Path,
) -> None:
    """``python -m app demo --orders 12 --path local`` prints 12 orders as expected, refuses a cancellation and exits 0."""
    result = run_demo_command(tmp_path, "--orders", "12", "--path", "local")
    assert result.returncode == 0, result.stdout + result.stderr
    assert_every_order_as_expected(result.stdout, 12)
    assert "refused, nothing published" in result.stdout
    assert "Kafka" not in result.stdout.split("Step 1")[0]
    assert (tmp_path / "eventseam-demo.db").is_file()


@pytest.mark.broker
def test_demo_command_walks_the_migration_path_by_default(tmp_path: Path) -> None:
    """``python -m app demo --orders 12`` starts the bundled broker, walks local -> dual -> broker -> a shipping worker process, and every step's orders end as expected."""
    result = run_demo_command(tmp_path, "--orders", "12")
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    rows = assert_every_order_as_expected(output, 12)
    assert [rows[s.order_id][-1] for s in plan(12)] == [str(1 + n // 3) for n in range(12)]
    for line in (
        "the bundled Kafka-protocol broker",
        "$ eventseam flags set orders dual",
        "$ eventseam parity --context orders",
        "in parity: safe to flip orders to broker",
        "$ eventseam flags set orders broker",
        "$ eventseam worker --context shipping",
        "the worker joined the consumer groups of its 2 handlers",
        "refused, nothing published",
        "shipping worker stopped (SIGTERM), exit status 0",
    ):
        assert line in output
    assert output.count("orders of this step reached their expected state") == 4
    assert "shipping.create_label_on_payment_authorized │ shipping worker" in output
    assert "did not settle" not in output


@pytest.fixture
def demo(database_url: str) -> Iterator[Demo]:
    """The application from app.bootstrap on a fresh SQLite or PostgreSQL database, observed, with 12 planned orders."""
    log = HandlerLog()
    seam = bootstrap(
        load_settings(database_url=database_url), create_schema=True, middlewares=[log.middleware]
    )
    yield Demo(seam, Console(file=io.StringIO(), width=200), log, plan(12))
    engine_of(seam).dispose()


async def run_all_steps(demo: Demo) -> None:
    """Run the bus, every demo step, and stop the bus."""
    async with anyio.create_task_group() as group:
        await group.start(demo.seam.run)
        await run_steps(demo, LOCAL_STEPS)
        await demo.seam.aclose()


@pytest.mark.anyio
async def test_every_order_reaches_its_expected_state_in_process(demo: Demo) -> None:
    """Through bootstrap's wiring, each order ends shipped, rejected or cancelled as planned."""
    await run_all_steps(demo)
    states = read_states(demo.seam)
    assert {order_id: state.outcome for order_id, state in states.items()} == {
        scenario.order_id: scenario.expected for scenario in demo.scenarios
    }
    assert demo.seam.bus.dead_letters.count() == 0


@pytest.mark.anyio
async def test_every_event_is_recorded_and_handled_by_its_subscribers(demo: Demo) -> None:
    """Every event is in the outbox under its publishing context, and each subscriber ran once on it."""
    await run_all_steps(demo)
    subscribers = {
        "orders.OrderPlaced": ["payments.authorize_payment_on_order_placed"],
        "orders.OrderCancelled": [
            "payments.void_payment_on_order_cancelled",
            "shipping.void_label_on_order_cancelled",
        ],
        "payments.PaymentAuthorized": [
            "orders.confirm_order_on_payment_authorized",
            "shipping.create_label_on_payment_authorized",
        ],
        "payments.PaymentDeclined": ["orders.reject_order_on_payment_declined"],
        "payments.PaymentVoided": [],
        "shipping.LabelCreated": ["orders.mark_order_shipped_on_label_created"],
        "shipping.LabelVoided": [],
    }
    events = read_events(demo.seam)
    assert sum(e.event_type == "orders.OrderPlaced" for e in events) == 12
    for event in events:
        assert event.context == event.event_type.split(".")[0]
        ran = sorted(run.handler for run in demo.log.of(event.event_id))
        assert ran == sorted(subscribers[event.event_type]), event


@pytest.mark.anyio
async def test_demo_exits_1_and_names_the_orders_that_are_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When an order's final state differs from its expectation, the demo says which and returns 1."""
    monkeypatch.setitem(EXPECTED, Kind.CARD_DECLINED, Outcome("shipped", "authorized", "created"))
    output = io.StringIO()
    status = await run_demo(6, tmp_path / "demo.db", Console(file=output, width=200), "local")
    assert status == 1
    assert "1 of 6 orders did not reach their expected state" in output.getvalue()
    assert (
        "order-05: expected shipped/authorized/created, got rejected/declined/-"
        in output.getvalue()
    )


class RecordingTransaction:
    """A Transaction for the services: a real Session, and publish() collecting the events."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.published: list[DomainEvent] = []

    def publish(self, *events: DomainEvent) -> None:
        """Record ``events`` instead of writing them to the outbox."""
        self.published.extend(events)


@pytest.fixture
def tx(database_url: str) -> Iterator[RecordingTransaction]:
    """A transaction on a fresh SQLite or PostgreSQL database holding every context's tables."""
    engine = database_engine(database_url)
    create_tables(engine)
    with Session(engine) as session, session.begin():
        yield RecordingTransaction(session)
    engine.dispose()


def order_placed(order_id: str = "order-1", total_cents: int = 5_000) -> OrderPlaced:
    """An OrderPlaced event for ``order_id``."""
    return OrderPlaced(
        aggregate_id=order_id, order_id=order_id, customer_id="cus_alice", total_cents=total_cents
    )


def order_cancelled(order_id: str = "order-1") -> OrderCancelled:
    """An OrderCancelled event for ``order_id``."""
    return OrderCancelled(aggregate_id=order_id, order_id=order_id, reason="test")


def test_cancellation_reaching_payments_first_stops_the_authorization(
    tx: RecordingTransaction,
) -> None:
    """OrderCancelled handled before OrderPlaced leaves a voided payment and authorizes nothing."""
    void_payment(tx, order_cancelled())
    assert settle_order(tx, order_placed()) is None
    payment = tx.session.query(Payment).one()
    assert payment.status is PaymentStatus.VOIDED
    assert tx.published == []


def test_cancellation_after_authorization_voids_the_payment(tx: RecordingTransaction) -> None:
    """An authorized payment is voided when its order is cancelled, publishing PaymentVoided."""
    settle_order(tx, order_placed())
    void_payment(tx, order_cancelled())
    assert [type(e) for e in tx.published] == [PaymentAuthorized, PaymentVoided]
    assert tx.session.query(Payment).one().status is PaymentStatus.VOIDED


def test_repeated_order_placed_is_applied_once(tx: RecordingTransaction) -> None:
    """A redelivered OrderPlaced neither charges twice nor publishes twice."""
    event = order_placed()
    settle_order(tx, event)
    settle_order(tx, event)
    assert len(tx.published) == 1
    assert tx.session.query(Payment).count() == 1


def test_cancellation_after_the_label_voids_it(tx: RecordingTransaction) -> None:
    """A label printed before the cancellation arrived is voided, publishing LabelVoided."""
    payment = PaymentAuthorized(
        aggregate_id="pay-1", payment_id="pay-1", order_id="order-1", amount_cents=5_000
    )
    create_label(tx, payment)
    void_label(tx, order_cancelled())
    assert [type(e) for e in tx.published] == [LabelCreated, LabelVoided]
    assert tx.session.query(Label).one().status is LabelStatus.VOIDED


def test_cancellation_reaching_shipping_first_stops_the_label(tx: RecordingTransaction) -> None:
    """OrderCancelled handled before PaymentAuthorized means no label is ever printed."""
    void_label(tx, order_cancelled())
    payment = PaymentAuthorized(
        aggregate_id="pay-1", payment_id="pay-1", order_id="order-1", amount_cents=5_000
    )
    assert create_label(tx, payment) is None
    assert tx.published == []


@pytest.mark.anyio
async def test_demo_falls_back_to_the_local_path_without_a_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a usable broker the default demo walks the local path and says so; ``--path full`` exits 2."""

    def unavailable(database: Path) -> KafkaSide:
        raise BrokerUnavailableError("no broker here")

    monkeypatch.setattr(KafkaSide, "connect", staticmethod(unavailable))
    output = io.StringIO()
    status = await run_demo(6, tmp_path / "demo.db", Console(file=output, width=200))
    assert status == 0
    assert "No Kafka (no broker here): the demo walks the local path only." in output.getvalue()
    assert "All 6 orders reached their expected state." in output.getvalue()
    refused = io.StringIO()
    assert await run_demo(6, tmp_path / "demo.db", Console(file=refused, width=200), "full") == 2
    assert "cannot walk the full path: no broker here" in refused.getvalue()


@pytest.mark.anyio
async def test_a_checkout_and_its_cancel_commit_together_or_not_at_all(demo: Demo) -> None:
    """in_transaction runs its commands in one transaction: a failing cancel undoes the checkout."""
    placed = PlaceOrder(order_id="order-x", customer_id="alice", total_cents=1_000)
    unknown = CancelOrder(order_id="order-unknown")
    async with anyio.create_task_group() as group:
        await group.start(demo.seam.run)
        with pytest.raises(OrderNotFoundError):
            await in_transaction(
                demo.seam,
                partial(place_order, command=placed),
                partial(cancel_order, command=unknown),
            )
        await in_transaction(
            demo.seam,
            partial(place_order, command=placed.model_copy(update={"order_id": "order-y"})),
        )
        await demo.seam.aclose()
    assert set(read_states(demo.seam)) == {"order-y"}
    assert [e.event_type for e in read_events(demo.seam)].count("orders.OrderPlaced") == 1


@pytest.mark.anyio
async def test_kafka_that_does_not_answer_is_named_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS pointing at nothing: the full path exits 2 naming it,
    the default path says so and walks the local path (it retried forever before)."""
    nowhere = f"127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS", nowhere)
    output = io.StringIO()
    console = Console(file=output, width=300)
    assert await run_demo(3, tmp_path / "full.db", console, "full") == 2
    assert f"Kafka at {nowhere} does not answer" in output.getvalue()
    output.truncate(0)
    assert await run_demo(3, tmp_path / "default.db", console) == 0
    assert "the demo walks the local path only" in output.getvalue()
