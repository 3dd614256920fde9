"""publish() through the Django ORM: outbox rows in Django's transaction, dispatch after commit."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any

import pytest
from django.db import connections, transaction
from django.test import override_settings

from engine.errors import EventTooLargeError, OwnershipError, TransactionError
from engine.integrations.django import OutsideAtomicBlockError, get_seam, publish
from outbox.table import Status
from tests.django import settings as test_settings
from tests.django.conftest import drain
from tests.django.shop.events import RECEIVED, SEEN, InvoiceIssued, OrderPlaced, audit
from tests.django.shop.models import Order


class Undo(Exception):
    """Raised by a test to roll an atomic block back (suppressed around it)."""


def placed(number: str, note: str = "") -> OrderPlaced:
    return OrderPlaced(aggregate_id=number, number=number, note=note)


def outbox_rows(alias: str) -> list[tuple[Any, ...]]:
    """(type, aggregateid, mode, status) of every outbox row, in write order."""
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT type, aggregateid, mode, status FROM eventseam_outbox ORDER BY seq")
        return [tuple(row) for row in cursor.fetchall()]


def order_numbers(alias: str) -> list[str]:
    return sorted(Order.objects.using(alias).values_list("number", flat=True))


def test_commit_keeps_the_model_row_and_the_outbox_row(alias: str) -> None:
    """A committed atomic block keeps both the ORM write and its outbox row, then dispatches."""
    with transaction.atomic(using=alias):
        Order.objects.using(alias).create(number="A1")
        publish(placed("A1"), using=alias)
    drain()
    assert order_numbers(alias) == ["A1"]
    assert outbox_rows(alias) == [("shop.OrderPlaced", "A1", "local", Status.LOCAL)]
    assert RECEIVED.numbers() == ["A1"]


def test_middlewares_from_settings_wrap_the_handlers(alias: str) -> None:
    """settings.EVENTSEAM['middlewares'] wrap every handler the committed event reaches."""
    SEEN.clear()
    with override_settings(
        EVENTSEAM={**test_settings.EVENTSEAM, "middlewares": ["tests.django.shop.events:seen"]}
    ):
        with transaction.atomic(using=alias):
            publish(placed("M1"), using=alias)
        drain()
        assert RECEIVED.numbers() == ["M1"]
        subscribed = [spec.name for spec in audit.handlers if OrderPlaced in spec.event_types]
        assert sorted(SEEN) == [(name, "shop.OrderPlaced") for name in sorted(subscribed)]


def test_rollback_removes_both_and_dispatches_nothing(alias: str) -> None:
    """A rolled-back atomic block leaves neither the ORM row nor the outbox row, and no handler runs."""
    with suppress(Undo), transaction.atomic(using=alias):
        Order.objects.using(alias).create(number="B1")
        publish(placed("B1"), using=alias)
        raise Undo
    drain()
    assert order_numbers(alias) == []
    assert outbox_rows(alias) == []
    assert RECEIVED.numbers() == []


def test_savepoint_rollback_removes_only_the_inner_events(alias: str) -> None:
    """A rolled-back nested atomic block drops its own rows and dispatch; the outer ones commit."""
    with transaction.atomic(using=alias):
        Order.objects.using(alias).create(number="C1")
        publish(placed("C1"), using=alias)
        with suppress(Undo), transaction.atomic(using=alias):
            Order.objects.using(alias).create(number="C2")
            publish(placed("C2"), using=alias)
            raise Undo
        with transaction.atomic(using=alias):  # a released savepoint keeps its events
            publish(placed("C3"), using=alias)
    drain()
    assert order_numbers(alias) == ["C1"]
    assert [row[1] for row in outbox_rows(alias)] == ["C1", "C3"]
    assert RECEIVED.numbers() == ["C1", "C3"]


def test_handlers_run_after_commit_only(alias: str) -> None:
    """Inside the atomic block nothing is dispatched yet, even after the bus settled; after commit it is."""
    with transaction.atomic(using=alias):
        publish(placed("D1"), using=alias)
        drain()
        assert RECEIVED.numbers() == []
    drain()
    assert RECEIVED.numbers() == ["D1"]


def test_publish_outside_an_atomic_block_is_refused(alias: str) -> None:
    """In autocommit mode publish raises a TransactionError naming the alias, and writes nothing."""
    with pytest.raises(
        OutsideAtomicBlockError, match=rf"transaction\.atomic\(using='{alias}'\)"
    ) as caught:
        publish(placed("E1"), using=alias)
    assert isinstance(caught.value, TransactionError)
    assert caught.value.using == alias
    assert outbox_rows(alias) == []


def test_publish_on_an_event_loop_is_refused() -> None:
    """publish called from async code raises a clear error pointing to apublish."""

    async def call() -> None:
        publish(placed("E2"))

    with pytest.raises(OutsideAtomicBlockError, match="apublish") as caught:
        asyncio.run(call())
    assert caught.value.in_event_loop


def test_broker_mode_is_written_pending_and_not_dispatched(alias: str) -> None:
    """A context in broker mode gets a pending row for the relay and no in-process dispatch."""
    with transaction.atomic(using=alias):
        publish(InvoiceIssued(aggregate_id="F1", number="F1"), using=alias)
        publish(placed("F2"), using=alias)
    drain()
    assert outbox_rows(alias) == [
        ("billing.InvoiceIssued", "F1", "broker", Status.PENDING),
        ("shop.OrderPlaced", "F2", "local", Status.LOCAL),
    ]
    assert RECEIVED.numbers() == ["F2"]


def test_engine_errors_leave_nothing_written(alias: str) -> None:
    """Ownership and size errors come from the EventSeam's pipeline before any row is written."""
    with transaction.atomic(using=alias):
        with pytest.raises(OwnershipError):
            publish(placed("G1"), using=alias, context="billing")
        with pytest.raises(EventTooLargeError):
            publish(placed("G2", note="x" * (300 * 1024)), using=alias)
    assert outbox_rows(alias) == []


def test_events_are_stamped_like_the_sqlalchemy_path(alias: str) -> None:
    """Dispatched events carry the publishing context as source, as EventSeam.publish stamps them."""
    with transaction.atomic(using=alias):
        publish(placed("H1"), placed("H2"), using=alias)
    drain()
    assert [(event.source, event.aggregate_id) for event in RECEIVED.events()] == [
        ("orders", "H1"),
        ("orders", "H2"),
    ]
    assert len(outbox_rows(alias)) == 2


def test_default_alias_comes_from_the_settings(sqlite_alias: str) -> None:
    """Without ``using`` publish writes to settings.EVENTSEAM['database'] (here 'default')."""
    with transaction.atomic():
        publish(placed("I1"))
    drain()
    assert [row[1] for row in outbox_rows(sqlite_alias)] == ["I1"]
    assert get_seam().settings.database_url.startswith("sqlite:///")


def test_handler_using_the_orm_publishes_follow_ups(alias: str) -> None:
    """A handler's ORM write and follow-up event commit together and the follow-up is dispatched."""
    with transaction.atomic(using=alias):
        publish(placed("J1", note=f"audit@{alias}"), using=alias)
    drain()
    assert order_numbers(alias) == ["J1-audit"]
    assert [row[0] for row in outbox_rows(alias)] == ["shop.OrderPlaced", "audit.AuditRecorded"]
    follow_up = RECEIVED.events()[-1]
    assert (follow_up.event_name, getattr(follow_up, "number", None)) == (
        "audit.AuditRecorded",
        "J1-audit",
    )
    assert follow_up.causation_id == RECEIVED.events()[0].event_id


def test_handler_context_session_runs_on_the_configured_database(alias: str) -> None:
    """HandlerContext.session/publish work in Django hosts, on settings.EVENTSEAM['database']."""
    with override_settings(EVENTSEAM={**test_settings.EVENTSEAM, "database": alias}):
        with transaction.atomic(using=alias):
            Order.objects.using(alias).create(number="K1")
            publish(placed("K1", note="session"), using=alias)
        drain()
        assert [row[0] for row in outbox_rows(alias)] == ["shop.OrderPlaced", "audit.AuditRecorded"]
        assert RECEIVED.numbers() == ["K1", "K1-seen-1"]


def test_debug_cursor_records_the_outbox_insert(alias: str) -> None:
    """With Django's debug cursor (DEBUG=True) the INSERT is logged in connection.queries like any query."""
    connection = connections[alias]
    connection.force_debug_cursor = True
    try:
        with transaction.atomic(using=alias):
            publish(placed("L1"), placed("L2"), using=alias)
        inserts = [
            q["sql"] for q in connection.queries if "INSERT INTO eventseam_outbox" in q["sql"]
        ]
    finally:
        connection.force_debug_cursor = False
    assert len(inserts) == 1
    assert [row[1] for row in outbox_rows(alias)] == ["L1", "L2"]
