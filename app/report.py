"""How the demo shows what happened: rich tables a newcomer can read top to bottom."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    import uuid
    from collections.abc import Mapping, Sequence

    from app.moves import HandlerMoves, MovedEvent
    from app.observe import HandlerLog
    from app.scenarios import Scenario
    from app.state import OrderState


def money(cents: int) -> str:
    """``12345`` -> ``€123.45``."""
    return f"€{cents / 100:,.2f}"


#: How each mode moves a context's events (DESIGN: local, dual, broker).
TRAVEL = {
    "local": "bus",
    "dual": "bus + Kafka",
    "broker": "Kafka",
}


def events_table(
    events: Sequence[MovedEvent],
    applied: Mapping[uuid.UUID, Sequence[str]],
    log: HandlerLog,
    where: Mapping[str, str],
) -> Table:
    """One row per event: who published it in which mode, how it travelled, who applied it.

    ``applied`` is the inbox (handlers that applied each event, by either path); ``where`` says
    where a handler runs when not in the monolith; ``log`` adds failed in-process attempts.
    """
    table = Table(
        title="Events, in the order they were written to the outbox", title_justify="left"
    )
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("event", no_wrap=True)
    table.add_column("order", no_wrap=True)
    table.add_column("published by", no_wrap=True)
    table.add_column("travelled", no_wrap=True)
    table.add_column("applied by (✓ once, ✗ failed try)", overflow="fold")
    for event in events:
        table.add_row(
            str(event.seq),
            event.event_type.removeprefix(f"{event.context}."),
            event.order_id,
            f"{event.context} ({event.mode})",
            TRAVEL.get(event.mode, event.mode),
            _applied(event, applied.get(event.event_id, ()), log, where),
        )
    return table


def _applied(
    event: MovedEvent, handlers: Sequence[str], log: HandlerLog, where: Mapping[str, str]
) -> str:
    lines = [f"[green]✓[/] {name}{_where(name, where)}" for name in sorted(handlers)]
    lines += [
        f"[red]✗[/] {run.handler} ({run.error})" for run in log.of(event.event_id) if not run.ok
    ]
    return "\n".join(lines) or "[dim]- no handler subscribes[/]"


def _where(handler: str, where: Mapping[str, str]) -> str:
    place = where.get(handler)
    return f" [dim]({place})[/]" if place else ""


def moves_table(moves: Sequence[HandlerMoves]) -> Table:
    """What moved where in one step: per handler, events applied from each path."""
    table = Table(
        title="What moved where: events each handler applied, by path; copies the inbox skipped",
        title_justify="left",
    )
    table.add_column("handler", no_wrap=True)
    table.add_column("runs in", no_wrap=True)
    table.add_column("from the bus", justify="right", no_wrap=True)
    table.add_column("from Kafka", justify="right", no_wrap=True)
    table.add_column("skipped (inbox)", justify="right", no_wrap=True)
    for move in moves:
        table.add_row(
            move.handler,
            move.runs_in,
            str(move.bus) if move.bus else "[dim]-[/]",
            str(move.kafka) if move.kafka else "[dim]-[/]",
            str(move.skipped) if move.skipped else "[dim]-[/]",
        )
    return table


def timings_table(timings: Sequence[tuple[str, int, float]]) -> Table:
    """Each step: its title, how many orders it placed and how long it took to settle."""
    table = Table(title="Steps", title_justify="left")
    table.add_column("step", no_wrap=True)
    table.add_column("orders", justify="right", no_wrap=True)
    table.add_column("seconds", justify="right", no_wrap=True)
    for title, orders, seconds in timings:
        table.add_row(title, str(orders), f"{seconds:.1f}")
    return table


def final_table(
    scenarios: Sequence[Scenario],
    states: Mapping[str, OrderState],
    steps: Mapping[str, int] | None = None,
) -> Table:
    """One row per order: its scenario, its state in each context, and whether it is as expected.

    With ``steps`` (order id -> step number), a "step" column says when each order was placed.
    """
    table = Table(title="Final state of each order, as each context sees it", title_justify="left")
    if steps is not None:
        table.add_column("step", justify="right", no_wrap=True)
    for column in (
        "order",
        "customer",
        "total",
        "scenario",
        "orders",
        "payments",
        "shipping",
        "as expected",
    ):
        table.add_column(column, justify="right" if column == "total" else "left", no_wrap=True)
    for scenario in scenarios:
        state = states.get(scenario.order_id)
        outcome = state.outcome if state is not None else None
        ok = outcome == scenario.expected
        first = [] if steps is None else [str(steps.get(scenario.order_id, "-"))]
        table.add_row(
            *first,
            scenario.order_id,
            scenario.customer_id,
            money(scenario.total_cents),
            scenario.kind.value,
            outcome.order if outcome else "[red]missing[/]",
            outcome.payment if outcome else "-",
            outcome.label if outcome else "-",
            "[green]yes[/]" if ok else "[red]NO[/]",
        )
    return table


def mismatches(scenarios: Sequence[Scenario], states: Mapping[str, OrderState]) -> list[str]:
    """``order-03: expected shipped/authorized/created, got ...`` for each order that is off."""
    off = []
    for scenario in scenarios:
        state = states.get(scenario.order_id)
        got = str(state.outcome) if state is not None else "no order row"
        if state is None or state.outcome != scenario.expected:
            off.append(f"{scenario.order_id}: expected {scenario.expected}, got {got}")
    return off
