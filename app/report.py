"""How the demo shows what happened: rich tables a newcomer can read top to bottom."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from app.observe import HandlerLog
    from app.scenarios import Scenario
    from app.state import OrderState, RecordedEvent


def money(cents: int) -> str:
    """``12345`` -> ``€123.45``."""
    return f"€{cents / 100:,.2f}"


def events_table(events: Sequence[RecordedEvent], log: HandlerLog) -> Table:
    """One row per event: who published it (the outbox says) and which handlers ran on it."""
    table = Table(
        title="Events, in the order they were written to the outbox", title_justify="left"
    )
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("event", no_wrap=True)
    table.add_column("order", no_wrap=True)
    table.add_column("published by", no_wrap=True)
    table.add_column("handled by (✓ ran, ✗ failed)", overflow="fold")
    for event in events:
        table.add_row(
            str(event.seq), event.event_type, event.order_id, event.context, _handlers(event, log)
        )
    return table


def _handlers(event: RecordedEvent, log: HandlerLog) -> str:
    runs = log.of(event.event_id)
    if not runs:
        return "[dim]- no handler subscribes[/]"
    return "\n".join(
        f"[green]✓[/] {run.handler}" if run.ok else f"[red]✗[/] {run.handler} ({run.error})"
        for run in runs
    )


def final_table(scenarios: Sequence[Scenario], states: Mapping[str, OrderState]) -> Table:
    """One row per order: its scenario, its state in each context, and whether it is as expected."""
    table = Table(title="Final state of each order, as each context sees it", title_justify="left")
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
        table.add_row(
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
