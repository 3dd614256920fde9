"""Bounded contexts: ownership, handler declarations and the ContextMap."""

from __future__ import annotations

import pytest

from engine.contexts import BoundedContext, ContextMap
from engine.errors import HandlerError, OwnershipError, UnknownContextError
from engine.events import DomainEvent


class OrderPlaced(DomainEvent, name="orders.OrderPlaced"):
    order_id: str


class OrderCancelled(DomainEvent, name="orders.OrderCancelled"):
    order_id: str


class StockReserved(DomainEvent, name="inventory.StockReserved"):
    sku: str


class AbstractOrderEvent(DomainEvent):
    order_id: str


def test_context_owns_its_events() -> None:
    """A context owns exactly the event types it lists."""
    orders = BoundedContext("orders", owns=[OrderPlaced, OrderCancelled])
    assert orders.owns_event(OrderPlaced)
    assert not orders.owns_event(StockReserved)
    assert orders.owns == (OrderPlaced, OrderCancelled)


def test_context_name_must_be_lower_snake_case() -> None:
    """Context names are durable identifiers: lower_snake_case only."""
    with pytest.raises(HandlerError, match="lower_snake_case"):
        BoundedContext("Orders")


def test_context_cannot_own_an_abstract_event() -> None:
    """An abstract base has no wire name, so it cannot be owned."""
    with pytest.raises(HandlerError, match="abstract"):
        BoundedContext("orders", owns=[AbstractOrderEvent])


def test_handler_declaration_records_a_spec() -> None:
    """The decorator records the durable name, types, sync/async and context parameter."""
    inventory = BoundedContext("inventory", owns=[StockReserved])

    @inventory.handler(OrderPlaced, name="reserve_stock_on_order_placed")
    def reserve(event: OrderPlaced) -> None:
        pass

    @inventory.handler(OrderPlaced, OrderCancelled, name="audit_order_events")
    async def audit(event: DomainEvent, ctx: object) -> None:
        pass

    first, second = inventory.handlers
    assert (first.name, first.context, first.function) == (
        "inventory.reserve_stock_on_order_placed",
        "inventory",
        reserve,
    )
    assert (first.is_async, first.takes_context) == (False, False)
    assert (second.is_async, second.takes_context) == (True, True)
    assert second.event_types == (OrderPlaced, OrderCancelled)
    assert second.accepts(OrderCancelled(aggregate_id="o", order_id="o"))
    assert not first.accepts(OrderCancelled(aggregate_id="o", order_id="o"))
    assert inventory.subscribed_types() == {OrderPlaced, OrderCancelled}


def test_star_args_handler_takes_the_context() -> None:
    """A handler with *args accepts the HandlerContext."""
    inventory = BoundedContext("inventory")

    @inventory.handler(OrderPlaced, name="log_everything")
    def log(*args: object) -> None:
        pass

    assert inventory.handlers[0].takes_context


def test_duplicate_durable_name_is_rejected() -> None:
    """Two handlers of one context cannot share a durable name."""
    inventory = BoundedContext("inventory")

    @inventory.handler(OrderPlaced, name="reserve_stock")
    def first(event: OrderPlaced) -> None:
        pass

    with pytest.raises(HandlerError, match=r"inventory\.reserve_stock"):

        @inventory.handler(OrderCancelled, name="reserve_stock")
        def second(event: OrderCancelled) -> None:
            pass


def test_same_handler_name_in_two_contexts_is_distinct() -> None:
    """Durable names are prefixed by the context, so two contexts may reuse a short name."""
    inventory, billing = BoundedContext("inventory"), BoundedContext("billing")
    for context in (inventory, billing):

        @context.handler(OrderPlaced, name="on_order_placed")
        def handle(event: OrderPlaced) -> None:
            pass

    names = [spec.name for spec in ContextMap([inventory, billing]).handlers()]
    assert names == ["inventory.on_order_placed", "billing.on_order_placed"]


@pytest.mark.parametrize("name", ["ReserveStock", "reserve-stock", "1st", "", "reserve stock"])
def test_handler_name_must_be_lower_snake_case(name: str) -> None:
    """Handler names that are not lower_snake_case are refused."""
    inventory = BoundedContext("inventory")
    with pytest.raises(HandlerError):
        inventory.handler(OrderPlaced, name=name)


def test_handler_needs_an_event_type() -> None:
    """A handler subscribing to nothing is a declaration error."""
    with pytest.raises(HandlerError, match="at least one event type"):
        BoundedContext("inventory").handler(name="nothing")


def _three(event: OrderPlaced, ctx: object, extra: int) -> None: ...


def _none() -> None: ...


def _keyword_only(*, event: OrderPlaced) -> None: ...


def _required_flag(event: OrderPlaced, *, flag: bool) -> None: ...


@pytest.mark.parametrize("function", [_three, _none, _keyword_only, _required_flag])
def test_a_handler_that_cannot_be_called_with_the_event_is_refused(function: object) -> None:
    """Only (event) and (event, ctx) can be called by the engine: anything else is refused when
    declared, naming the handler and the parameters, not dead-lettered event after event."""
    with pytest.raises(HandlerError, match=r"must take \(event\) or \(event, ctx\)"):
        BoundedContext("inventory").handler(OrderPlaced, name="reserve")(function)  # type: ignore[type-var]


def test_optional_extra_parameters_are_accepted() -> None:
    """Parameters with defaults do not count: (event, ctx=None) takes the context."""

    def with_default(event: OrderPlaced, ctx: object = None, *, verbose: bool = False) -> None:
        return None

    inventory = BoundedContext("inventory")
    inventory.handler(OrderPlaced, name="reserve")(with_default)
    assert inventory.handlers[0].takes_context


def test_context_map_lookup_and_ownership() -> None:
    """The map finds contexts by name and owners by event type."""
    orders = BoundedContext("orders", owns=[OrderPlaced, OrderCancelled])
    inventory = BoundedContext("inventory", owns=[StockReserved])
    contexts = ContextMap([orders, inventory])
    assert contexts["orders"] is orders
    assert "inventory" in contexts
    assert "billing" not in contexts
    assert contexts.names() == ["orders", "inventory"]
    assert list(contexts) == [orders, inventory]
    assert contexts.owner_of(StockReserved) == "inventory"
    assert contexts.owner_of(AbstractOrderEvent) is None
    expected: list[type[DomainEvent]] = [OrderPlaced, OrderCancelled, StockReserved]
    assert contexts.event_types() == expected


def test_unknown_context_lists_known_ones() -> None:
    """Looking up an unknown context raises UnknownContextError (a KeyError) naming the known ones."""
    contexts = ContextMap([BoundedContext("orders")])
    with pytest.raises(UnknownContextError) as caught:
        contexts["billing"]
    assert isinstance(caught.value, KeyError)
    assert caught.value.known == ["orders"]
    assert str(caught.value) == "unknown context 'billing'; known contexts: orders"


def test_an_event_type_has_one_owner() -> None:
    """Two contexts owning one event type is a declaration error."""
    with pytest.raises(HandlerError, match="owned by both"):
        ContextMap(
            [
                BoundedContext("orders", owns=[OrderPlaced]),
                BoundedContext("sales", owns=[OrderPlaced]),
            ]
        )


def test_context_registered_twice_is_rejected() -> None:
    """Context names are unique within a map."""
    with pytest.raises(HandlerError, match="registered twice"):
        ContextMap([BoundedContext("orders"), BoundedContext("orders")])


def test_check_publish() -> None:
    """Only the owner may publish an event type; the error says who owns it."""
    contexts = ContextMap(
        [
            BoundedContext("orders", owns=[OrderPlaced]),
            BoundedContext("inventory", owns=[StockReserved]),
        ]
    )
    contexts.check_publish("orders", OrderPlaced)
    with pytest.raises(OwnershipError) as caught:
        contexts.check_publish("inventory", OrderPlaced)
    error = caught.value
    assert (error.context, error.event_type, error.owner) == (
        "inventory",
        "orders.OrderPlaced",
        "orders",
    )
    assert "owned by 'orders'" in str(error)
    with pytest.raises(OwnershipError, match="no context owns it"):
        contexts.check_publish("orders", OrderCancelled)


def test_handlers_of_chosen_contexts() -> None:
    """handlers() filters by context name and fails on an unknown one."""
    orders, inventory = BoundedContext("orders"), BoundedContext("inventory")

    @inventory.handler(OrderPlaced, name="reserve_stock")
    def reserve(event: OrderPlaced) -> None:
        pass

    contexts = ContextMap([orders, inventory])
    assert contexts.handlers(["orders"]) == []
    assert [s.name for s in contexts.handlers(["inventory"])] == ["inventory.reserve_stock"]
    with pytest.raises(UnknownContextError):
        contexts.handlers(["billing"])
