"""The demo: orders through orders -> payments -> shipping, walking the migration path.

    python -m app demo --orders 20                  # the whole path when Kafka is at hand
    python -m app demo --orders 20 --path local     # the in-memory bus only

It builds the application with ``app.bootstrap`` on a fresh SQLite file (the outbox included)
and goes through STEPS, one slice of the orders per step. The full path needs Kafka:
EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS, else the bundled broker of the kafka extra, which the demo
starts itself (app.migration). Without either (the named Kafka does not answer within
app.migration.PROBE_SECONDS, or the bundled broker does not start), the demo walks the local
path and says so.

1. Every context ``local``: events travel on the in-memory bus.
2. ``orders`` ``dual``: its events travel on the bus and through outbox -> relay -> Kafka. The
   monolith's own consumers (EventSeam runs them whenever Kafka is configured) receive the Kafka
   copy and the inbox skips it: each handler applies each event once. ``eventseam parity``
   compares the two paths.
3. ``orders`` ``broker``: its subscribers receive its events from Kafka only.
4. ``shipping`` detached: its handlers' inputs must reach Kafka (orders is broker, payments goes
   ``dual``) and its own events must leave through the outbox (shipping goes ``broker``);
   ``eventseam worker --context shipping`` starts as a subprocess and the monolith restarts
   without shipping's handlers (``EVENTSEAM_DETACHED=["shipping"]``).
5. Try to cancel an order that shipped: orders refuses, nothing is published.

After each step it waits until nothing moves (the bus idle, every outbox row relayed, every
consumer group caught up), then prints the step's events (the mode each was published in, how it
travelled, which handlers applied it, from the inbox), what moved where (per handler, events
applied from the bus and from Kafka, duplicates the inbox skipped) and whether the step's orders
reached the same final state as on the in-memory bus. At the end it prints every order and the
time each step took. Exit status: 0 when every order is as its scenario expects, 1 otherwise,
2 when the demo cannot run.

Commands run in a worker thread, as a sync view of the monolith runs in its request thread,
while the bus, the relay and the consumers run on the event loop. A customer who cancels right
after checkout does so in the checkout's own transaction: OrderPlaced and OrderCancelled commit
together, so no context hears of the order before it is cancelled, on every run (two
transactions would race the order's payment and label, and the cancel would lose the race
whenever the order shipped first).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from pydantic import ValidationError

from app.bootstrap import bootstrap, engine_of
from app.migration import BrokerUnavailableError, KafkaSide
from app.moves import Counts, counts, detached_handlers, moves, read_applied, read_moved
from app.observe import HandlerLog
from app.report import events_table, final_table, mismatches, money, moves_table, timings_table
from app.scenarios import Kind, Scenario, plan, split
from app.state import read_states
from contexts.orders.commands import CancelOrder, PlaceOrder
from contexts.orders.errors import OrderNotCancellableError
from contexts.orders.service import cancel_order, place_order
from contexts.payments.service import CARD_LIMIT_CENTS, DECLINED_CUSTOMERS
from engine.errors import EngineError, SettingsError
from engine.modes import Mode
from engine.parity import context_parity
from engine.settings import load_settings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from anyio.abc import TaskGroup
    from rich.console import Console

    from engine.seam import EventSeam
    from engine.types import Transaction
    from outbox.relay import Relay

DEFAULT_DATABASE = Path("eventseam-demo.db")
FULL, LOCAL = "full", "local"


@dataclass
class Demo:
    """What the steps share: the application, the console, the handler log and the plan.

    ``side`` is the broker side (None on the local path); ``group`` runs the monolith, so a
    step can restart it.
    """

    seam: EventSeam
    console: Console
    log: HandlerLog
    scenarios: list[Scenario]
    last_seq: int = 0
    side: KafkaSide | None = None
    group: TaskGroup | None = None
    batches: list[list[Scenario]] = field(default_factory=list)
    step_of: dict[str, int] = field(default_factory=dict)
    step: int = 0
    timings: list[tuple[str, int, float]] = field(default_factory=list)
    retired: list[EventSeam] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Step:
    """One step of the demo: a title, what it does, and an optional check once it settled."""

    title: str
    run: Callable[[Demo], Awaitable[None]]
    check: Callable[[Demo], Awaitable[None]] | None = None


# -- steps ------------------------------------------------------------------------------------


async def in_transaction(seam: EventSeam, *commands: Callable[[Transaction], object]) -> None:
    """Run ``commands`` in order in one transaction of ``seam``, in a worker thread.

    Never on the event loop: the relay and the consumers run on it, and a database write that
    blocks it can wait on a lock that only they can release (SQLite: the relay's statement that
    holds the write lock until the loop lets it read its result), until the busy timeout fails it.
    """

    def run() -> None:
        with seam.transaction() as uow:
            for command in commands:
                command(uow)

    await anyio.to_thread.run_sync(run)


async def place_orders(demo: Demo) -> None:
    """Place this step's orders; cancel the ``cancelled`` ones in their checkout's transaction."""
    batch = demo.batches.pop(0) if demo.batches else []
    if not batch:
        demo.console.print("  (no order left for this step: run with more --orders)")
    for scenario in batch:
        demo.step_of[scenario.order_id] = demo.step
        command = PlaceOrder(
            order_id=scenario.order_id,
            customer_id=scenario.customer_id,
            total_cents=scenario.total_cents,
        )
        commands: list[Callable[[Transaction], object]] = [partial(place_order, command=command)]
        note = ""
        if scenario.kind is Kind.CANCELLED:  # in the checkout's transaction (module docstring)
            cancel = CancelOrder(order_id=scenario.order_id, reason="customer changed their mind")
            commands.append(partial(cancel_order, command=cancel))
            note = ", then cancelled by the customer"
        await in_transaction(demo.seam, *commands)
        demo.console.print(
            f"  {scenario.order_id}  {scenario.customer_id:<13} {money(scenario.total_cents):>10}  placed{note}"
        )


async def cancel_a_shipped_order(demo: Demo) -> None:
    """Try to cancel an order that has shipped: the orders context refuses the command."""
    shipped = next((s for s in demo.scenarios if s.kind is Kind.SHIPS), None)
    if shipped is None:
        demo.console.print("  (no shipped order to try with)")
        return
    cancel = CancelOrder(order_id=shipped.order_id)
    try:
        await in_transaction(demo.seam, partial(cancel_order, command=cancel))
    except OrderNotCancellableError as exc:
        demo.console.print(f"  refused, nothing published: {exc}")
    else:
        demo.console.print(f"  [red]{shipped.order_id} was cancelled although it had shipped[/]")


async def flip(demo: Demo, context: str, mode: Mode) -> None:
    """``eventseam flags set CONTEXT MODE``: the running monolith follows within 0.1 s."""
    assert demo.side is not None
    before = demo.seam.mode_of(context)
    await demo.side.flip(demo.seam, context, mode)
    demo.console.print(
        f"  [bold]$ eventseam flags set {context} {mode.value}[/]   "
        f"{context}: {before.value} -> {demo.seam.mode_of(context).value}"
    )


async def orders_dual(demo: Demo) -> None:
    """Shadow the broker path: orders' events go through the bus and through Kafka."""
    await flip(demo, "orders", Mode.DUAL)
    await place_orders(demo)


async def orders_broker(demo: Demo) -> None:
    """Cut over: orders' subscribers receive its events from Kafka only."""
    await flip(demo, "orders", Mode.BROKER)
    await place_orders(demo)


async def detach_shipping(demo: Demo) -> None:
    """Start the shipping worker, restart the monolith without shipping, then place orders."""
    side = demo.side
    assert side is not None
    demo.console.print(
        "  shipping's handlers listen to PaymentAuthorized and OrderCancelled, which must reach\n"
        "  Kafka; the events they publish must leave through the outbox:"
    )
    await flip(demo, "payments", Mode.DUAL)
    await flip(demo, "shipping", Mode.BROKER)
    await restart_monolith(demo, detached=("shipping",))
    modes = {name: demo.seam.mode_of(name) for name in ("orders", "payments", "shipping")}
    pid = side.start_worker("shipping", modes)
    demo.console.print(
        f"  [bold]$ eventseam worker --context shipping[/]   pid {pid}, log {side.worker_log}"
    )
    handlers = len(demo.seam.contexts["shipping"].handlers)
    if await side.worker_ready(handlers):
        demo.console.print(f"  the worker joined the consumer groups of its {handlers} handlers")
    else:
        demo.console.print("  [red]the worker did not join its consumer groups (see its log)[/]")
    await place_orders(demo)


async def restart_monolith(demo: Demo, *, detached: tuple[str, ...]) -> None:
    """Stop the monolith (its consumers commit and leave) and start it with ``detached``."""
    assert demo.side is not None
    assert demo.group is not None
    old = demo.seam
    await old.aclose()
    demo.retired.append(old)
    demo.seam = bootstrap(
        demo.side.settings(detached=detached), create_schema=True, middlewares=[demo.log.middleware]
    )
    await demo.group.start(demo.seam.run)
    demo.console.print(
        f"  [bold]monolith restarted with EVENTSEAM_DETACHED={json.dumps(list(detached))}[/]: "
        f"its bus and its consumers no longer run {', '.join(detached)}'s handlers"
    )


async def orders_parity(demo: Demo) -> None:
    """``eventseam parity --context orders``: both paths delivered every orders event."""
    report = await context_parity(demo.seam, "orders")
    demo.console.print("  [bold]$ eventseam parity --context orders[/]")
    for handler in report.handlers:
        missing = ", ".join(f"{n} {r.value}" for r, n in handler.reasons().items()) or "none"
        demo.console.print(
            f"    {handler.handler}: local path {handler.local_delivered}/{handler.local_expected}, "
            f"Kafka path {handler.kafka_delivered}/{handler.kafka_expected}, lag {handler.lag}, "
            f"missing {missing}"
        )
    verdict = (
        "[green]in parity[/]: safe to flip orders to broker"
        if report.ok
        else "[red]not in parity[/]"
    )
    demo.console.print(f"    {verdict}")


STEPS: list[Step] = [
    Step("Every context local: the in-memory bus", place_orders),
    Step(
        "orders -> dual: the bus and the broker, the inbox applies once", orders_dual, orders_parity
    ),
    Step("orders -> broker: orders' subscribers receive its events from Kafka", orders_broker),
    Step("Detach shipping: `eventseam worker --context shipping`", detach_shipping),
    Step("Try to cancel an order that already shipped", cancel_a_shipped_order),
]
"""The full migration path (needs Kafka)."""

LOCAL_STEPS: list[Step] = [
    Step("Place the orders (in-memory bus, every event recorded in the outbox)", place_orders),
    Step("Try to cancel an order that already shipped", cancel_a_shipped_order),
]
"""The in-memory bus only."""


# -- running ----------------------------------------------------------------------------------


async def settle(demo: Demo) -> bool:
    """Wait until every event published so far, follow-ups included, has been handled."""
    await demo.seam.join()
    if demo.side is None:
        return True
    return await demo.side.settled(demo.seam)


async def run_steps(demo: Demo, steps: list[Step]) -> None:
    """Run each step, wait until it settled, print what it caused and how long it took."""
    placing = sum(1 for step in steps if step.run is not cancel_a_shipped_order)
    if not demo.batches:
        demo.batches = split(demo.scenarios, max(1, placing))
    for number, step in enumerate(steps, start=1):
        demo.step = number
        demo.console.rule(f"Step {number}: {step.title}")
        started, before = time.monotonic(), counts(demo.seam)
        await step.run(demo)
        if not await settle(demo):
            demo.console.print("  [red]the step did not settle within 60 s[/]")
        seconds = time.monotonic() - started
        _print_step(demo, before)
        if step.check is not None:
            await step.check(demo)
        placed = sum(1 for n in demo.step_of.values() if n == number)
        demo.timings.append((f"{number}. {step.title}", placed, seconds))
        demo.console.print(f"  [dim]step {number} settled in {seconds:.1f} s[/]")


def _print_step(demo: Demo, before: Counts) -> None:
    events = read_moved(demo.seam, demo.last_seq)
    if not events:
        demo.console.print("  no event was published")
        return
    demo.last_seq = events[-1].seq
    applied = read_applied(demo.seam, [event.event_id for event in events])
    where = dict.fromkeys(detached_handlers(demo.seam), "worker")
    demo.console.print(events_table(events, applied, demo.log, where))
    if demo.side is not None:
        demo.console.print(moves_table(moves(demo.seam, before, counts(demo.seam))))
    _step_verdict(demo)


def _step_verdict(demo: Demo) -> None:
    chosen = [s for s in demo.scenarios if demo.step_of.get(s.order_id) == demo.step]
    if not chosen:
        return
    off = mismatches(chosen, read_states(demo.seam))
    if off:
        demo.console.print(f"  [red]{len(off)} of {len(chosen)} orders of this step are off:[/]")
        for line in off:
            demo.console.print(f"    {line}", markup=False)
    else:
        same = ": the same final state as on the in-memory bus" if demo.step > 1 else ""
        demo.console.print(
            f"  [green]{len(chosen)}/{len(chosen)} orders of this step reached their expected "
            f"state{same}[/]"
        )


async def run_demo(orders: int, database: Path, console: Console, path: str | None = None) -> int:
    """Run the demo with ``orders`` orders on a fresh SQLite file; return the exit status.

    ``path``: ``full`` (fails with 2 when no broker can be used), ``local``, or None for the
    full path when a broker can be used and the local one otherwise.
    """
    log = HandlerLog()
    side: KafkaSide | None = None
    if path != LOCAL:
        try:
            side = await KafkaSide.connect(database)
        except BrokerUnavailableError as exc:
            if path == FULL:
                console.print(f"[red]The demo cannot walk the full path:[/] {exc}")
                return 2
            console.print(f"[yellow]No Kafka ({exc}): the demo walks the local path only.[/]")
    try:
        return await _run(orders, database, console, log, side)
    finally:
        if side is not None:
            side.close()


async def _run(
    orders: int, database: Path, console: Console, log: HandlerLog, side: KafkaSide | None
) -> int:
    try:
        seam = _start_fresh(database, log, side)
    except (ValidationError, EngineError) as exc:
        console.print(f"[red]The demo cannot start:[/] {exc}", markup=True)
        return 2
    demo = Demo(seam, console, log, plan(orders), side=side)
    _introduce(console, orders, database, side)
    try:
        async with anyio.create_task_group() as group:
            demo.group = group
            await group.start(seam.run)
            relay = await _start_relay(demo, group)
            await run_steps(demo, STEPS if side is not None else LOCAL_STEPS)
            if side is not None:
                status = side.stop_worker()
                if status is not None:
                    console.print(f"shipping worker stopped (SIGTERM), exit status {status}")
            if relay is not None:
                relay.stop()
            await demo.seam.aclose()
        return _verdict(demo)
    finally:
        for each in [*demo.retired, demo.seam]:
            engine_of(each).dispose()


async def _start_relay(demo: Demo, group: TaskGroup) -> Relay | None:
    """The relay (``eventseam relay``), in this process for the demo; None on the local path."""
    if demo.side is None:
        return None
    from outbox.relay import Relay  # the kafka extra

    relay = Relay(demo.seam.settings)
    await group.start(relay.run)
    return relay


def _start_fresh(database: Path, log: HandlerLog, side: KafkaSide | None) -> EventSeam:
    """The application on an empty SQLite file (local path: refuses contexts in broker mode)."""
    if side is not None:
        settings = side.settings()
    else:
        # the in-memory bus only: no consumers even when EVENTSEAM_KAFKA__* is set
        settings = load_settings(
            database_url=f"sqlite:///{database}", kafka={"bootstrap_servers": None}
        )
        broker = sorted(name for name, mode in settings.contexts.items() if mode is Mode.BROKER)
        if broker:
            raise SettingsError(
                f"the local demo runs on the in-memory bus; contexts in broker mode: {', '.join(broker)}"
            )
    _remove_database(database)
    return bootstrap(settings, create_schema=True, middlewares=[log.middleware])


def _introduce(console: Console, orders: int, database: Path, side: KafkaSide | None) -> None:
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
    if side is None:
        return
    console.print(
        "The migration path, one slice of the orders per step: every context local -> orders dual ->\n"
        "orders broker -> shipping detached into its own process. Flags flip at runtime (the flag table);\n"
        "the relay runs in this process (`eventseam relay` in production)."
    )
    console.print(f"Kafka: {side.description}.")


def _verdict(demo: Demo) -> int:
    states = read_states(demo.seam)
    demo.console.rule("Result")
    steps = demo.step_of if demo.side is not None else None
    demo.console.print(final_table(demo.scenarios, states, steps))
    if demo.side is not None:
        demo.console.print(timings_table(demo.timings))
    # Every seam of the demo stores its bus's dead letters in the one eventseam_dead_letter
    # table, so the current seam's count covers the retired ones too.
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
