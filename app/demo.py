"""The demo: N orders through orders -> payments -> shipping on the embedded defaults.

    python -m app demo --orders 12

It builds the application with ``app.bootstrap`` on a fresh SQLite file (the outbox included),
runs the in-memory bus in this process, and goes through STEPS. After each step it waits until
the bus is idle and prints every event the outbox recorded in the step, the context that
published it and the handlers that ran on it (``app.observe.HandlerLog``). At the end it prints
every order's state in the three contexts and returns 0 only when each is what its scenario
expects (``app.scenarios``), 1 otherwise, 2 when it cannot run.

Commands run on the event loop's thread, as a sync view of the monolith would run in its
request thread: the handlers start when the step awaits. So an order cancelled right after
checkout is cancelled before payments or shipping hear of it, on every run.

Later steps (broker mode, detached contexts) are added to STEPS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from pydantic import ValidationError

from app.bootstrap import bootstrap, engine_of
from app.observe import HandlerLog
from app.report import events_table, final_table, mismatches, money
from app.scenarios import Kind, Scenario, plan
from app.state import read_events, read_states
from contexts.orders.commands import CancelOrder, PlaceOrder
from contexts.orders.errors import OrderNotCancellableError
from contexts.orders.service import cancel_order, place_order
from contexts.payments.service import CARD_LIMIT_CENTS, DECLINED_CUSTOMERS
from engine.errors import EngineError, SettingsError
from engine.modes import Mode
from engine.settings import load_settings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from rich.console import Console

    from engine.seam import EventSeam

DEFAULT_DATABASE = Path("eventseam-demo.db")


@dataclass
class Demo:
    """What the steps share: the application, the console, the handler log and the plan."""

    seam: EventSeam
    console: Console
    log: HandlerLog
    scenarios: list[Scenario]
    last_seq: int = 0


@dataclass(frozen=True, slots=True)
class Step:
    """One step of the demo: a title, and what it does (sync commands, then it returns)."""

    title: str
    run: Callable[[Demo], Awaitable[None]]


async def place_orders(demo: Demo) -> None:
    """Place every planned order; cancel the ``cancelled`` ones right after checkout."""
    for scenario in demo.scenarios:
        command = PlaceOrder(
            order_id=scenario.order_id,
            customer_id=scenario.customer_id,
            total_cents=scenario.total_cents,
        )
        with demo.seam.transaction() as uow:
            place_order(uow, command)
        note = ""
        if scenario.kind is Kind.CANCELLED:
            with demo.seam.transaction() as uow:
                cancel_order(
                    uow,
                    CancelOrder(order_id=scenario.order_id, reason="customer changed their mind"),
                )
            note = ", then cancelled by the customer"
        demo.console.print(
            f"  {scenario.order_id}  {scenario.customer_id:<13} {money(scenario.total_cents):>10}  placed{note}"
        )


async def cancel_a_shipped_order(demo: Demo) -> None:
    """Try to cancel an order that has shipped: the orders context refuses the command."""
    shipped = next((s for s in demo.scenarios if s.kind is Kind.SHIPS), None)
    if shipped is None:
        demo.console.print("  (no shipped order to try with)")
        return
    try:
        with demo.seam.transaction() as uow:
            cancel_order(uow, CancelOrder(order_id=shipped.order_id))
    except OrderNotCancellableError as exc:
        demo.console.print(f"  refused, nothing published: {exc}")
    else:
        demo.console.print(f"  [red]{shipped.order_id} was cancelled although it had shipped[/]")


STEPS: list[Step] = [
    Step("Place the orders (in-memory bus, every event recorded in the outbox)", place_orders),
    Step("Try to cancel an order that already shipped", cancel_a_shipped_order),
]


async def settle(demo: Demo) -> None:
    """Wait until every event published so far, follow-ups included, has been handled."""
    await demo.seam.join()


async def run_steps(demo: Demo, steps: list[Step]) -> None:
    """Run each step, wait for the bus to settle, print the events the step caused."""
    for number, step in enumerate(steps, start=1):
        demo.console.rule(f"Step {number}: {step.title}")
        await step.run(demo)
        await settle(demo)
        events = read_events(demo.seam, demo.last_seq)
        if events:
            demo.last_seq = events[-1].seq
            demo.console.print(events_table(events, demo.log))
        else:
            demo.console.print("  no event was published")


async def run_demo(orders: int, database: Path, console: Console) -> int:
    """Run the demo with ``orders`` orders on a fresh SQLite file; return the exit status."""
    log = HandlerLog()
    try:
        seam = _start_fresh(database, log)
    except (ValidationError, EngineError) as exc:
        console.print(f"[red]The demo cannot start:[/] {exc}", markup=True)
        return 2
    demo = Demo(seam, console, log, plan(orders))
    _introduce(console, orders, database)
    try:
        async with anyio.create_task_group() as group:
            await group.start(seam.run)
            await run_steps(demo, STEPS)
            await seam.aclose()
        return _verdict(demo)
    finally:
        engine_of(seam).dispose()


def _start_fresh(database: Path, log: HandlerLog) -> EventSeam:
    """The application on an empty SQLite file; raises when settings put a context in broker mode."""
    settings = load_settings(database_url=f"sqlite:///{database}")
    broker = sorted(name for name, mode in settings.contexts.items() if mode is Mode.BROKER)
    if broker:
        raise SettingsError(
            f"the demo runs on the in-memory bus; contexts in broker mode: {', '.join(broker)}"
        )
    _remove_database(database)
    return bootstrap(settings, create_schema=True, middlewares=[log.middleware])


def _introduce(console: Console, orders: int, database: Path) -> None:
    limit = money(CARD_LIMIT_CENTS)
    declined = ", ".join(sorted(DECLINED_CUSTOMERS))
    console.print(
        f"[bold]eventseam demo[/]: {orders} orders through three bounded contexts that talk only through events.\n"
        "  [bold]orders[/]    places orders (OrderPlaced) and cancels them (OrderCancelled); follows the other two:\n"
        "            placed -> confirmed -> shipped, or rejected, or cancelled\n"
        f"  [bold]payments[/]  authorizes each order (PaymentAuthorized), declines it (PaymentDeclined) when the\n"
        f"            total is over {limit} or the customer is {declined}, voids it when cancelled\n"
        "  [bold]shipping[/]  prints a label for each paid order (LabelCreated), voids it when cancelled\n"
        "Each event is written to the outbox in the transaction of the business write, and handed to\n"
        f"the subscribed handlers after the commit. Database: {database} (recreated on every run)."
    )


def _verdict(demo: Demo) -> int:
    states = read_states(demo.seam)
    demo.console.rule("Result")
    demo.console.print(final_table(demo.scenarios, states))
    dead = demo.seam.bus.dead_letters.count()
    if dead:
        demo.console.print(
            f"[red]{dead} event(s) were dead-lettered (a handler failed on every attempt)[/]"
        )
    off = mismatches(demo.scenarios, states)
    if off:
        demo.console.print(
            f"[red]{len(off)} of {len(demo.scenarios)} orders did not reach their expected state:[/]"
        )
        for line in off:
            demo.console.print(f"  {line}", markup=False)
        return 1
    demo.console.print(f"[green]All {len(demo.scenarios)} orders reached their expected state.[/]")
    return 0


def _remove_database(database: Path) -> None:
    """Start from an empty database: remove the file and SQLite's WAL companions."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        database.with_name(database.name + suffix).unlink(missing_ok=True)
