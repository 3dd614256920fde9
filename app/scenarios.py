"""The demo's orders: a deterministic mix of what can happen to an order, and what each should end as.

    ships          paid and shipped                  -> shipped   / authorized / label created
    over_limit     total above the card limit        -> rejected  / declined   / no label
    card_declined  a customer whose card always fails -> rejected  / declined   / no label
    cancelled      cancelled right after checkout     -> cancelled / voided     / label voided

A cancelled order's payment and label end as ``voided`` whichever reaches payments and shipping
first, the order or its cancellation (see contexts/payments/service.py and shipping/service.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from contexts.payments.service import CARD_LIMIT_CENTS, DECLINED_CUSTOMERS


class Kind(StrEnum):
    """What the demo makes happen to an order."""

    SHIPS = "ships"
    OVER_LIMIT = "over_limit"
    CARD_DECLINED = "card_declined"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Outcome:
    """The final state of one order across the three contexts (``-``: no row)."""

    order: str
    payment: str
    label: str

    def __str__(self) -> str:
        return f"{self.order}/{self.payment}/{self.label}"


EXPECTED: dict[Kind, Outcome] = {
    Kind.SHIPS: Outcome("shipped", "authorized", "created"),
    Kind.OVER_LIMIT: Outcome("rejected", "declined", "-"),
    Kind.CARD_DECLINED: Outcome("rejected", "declined", "-"),
    Kind.CANCELLED: Outcome("cancelled", "voided", "voided"),
}

#: Kinds in the order they repeat: 12 orders give 6 shipped, 4 rejected, 2 cancelled.
CYCLE: tuple[Kind, ...] = (
    Kind.SHIPS,
    Kind.SHIPS,
    Kind.OVER_LIMIT,
    Kind.CANCELLED,
    Kind.CARD_DECLINED,
    Kind.SHIPS,
)
CUSTOMERS: tuple[str, ...] = ("cus_alice", "cus_bob", "cus_carol")


@dataclass(frozen=True, slots=True)
class Scenario:
    """One order the demo places, and what it does with it."""

    order_id: str
    customer_id: str
    total_cents: int
    kind: Kind

    @property
    def expected(self) -> Outcome:
        """The final state this order must reach."""
        return EXPECTED[self.kind]


def plan(count: int) -> list[Scenario]:
    """``count`` orders (ids ``order-01``...), cycling through CYCLE; the same on every run."""
    width = max(2, len(str(count)))
    return [_scenario(number, f"order-{number:0{width}d}") for number in range(1, count + 1)]


def split(scenarios: list[Scenario], parts: int) -> list[list[Scenario]]:
    """``scenarios`` in ``parts`` consecutive slices, as even as can be (the first ones longer)."""
    size, extra = divmod(len(scenarios), parts)
    slices, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        slices.append(scenarios[start:end])
        start = end
    return slices


def _scenario(number: int, order_id: str) -> Scenario:
    kind = CYCLE[(number - 1) % len(CYCLE)]
    customer = CUSTOMERS[(number - 1) % len(CUSTOMERS)]
    total = 1_990 + (1_250 * number) % 90_000
    if kind is Kind.OVER_LIMIT:
        total = CARD_LIMIT_CENTS + 25_000 + number
    if kind is Kind.CARD_DECLINED:
        customer = sorted(DECLINED_CUSTOMERS)[0]
    return Scenario(order_id, customer, total, kind)
