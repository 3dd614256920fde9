"""Views publishing through Django's test clients: request thread -> outbox -> bridge -> bus -> handler."""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio.to_thread
import pytest
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.db import connections
from django.test import AsyncClient, Client

from engine.integrations.django import apublish, get_seam
from tests.django.conftest import drain
from tests.django.shop.events import RECEIVED, OrderPlaced
from tests.django.shop.models import Order

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from django.http.response import HttpResponseBase


def outbox_aggregates(alias: str) -> list[str]:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT aggregateid FROM eventseam_outbox ORDER BY seq")
        return [str(row[0]) for row in cursor.fetchall()]


def outbox_aggregates_closing(alias: str) -> list[str]:
    """``outbox_aggregates`` from a worker thread, closing that thread's connections after."""
    try:
        return outbox_aggregates(alias)
    finally:
        connections.close_all()


@asynccontextmanager
async def request_thread() -> AsyncIterator[None]:
    """One thread-sensitive context, like an ASGI request: its sync code shares one thread.

    Django's test clients keep connections open at the end of a request (an ASGI server closes
    them through request_finished), so the thread's connections are closed here.
    """
    async with ThreadSensitiveContext():
        try:
            yield
        finally:
            await sync_to_async(connections.close_all)()


async def post_async(path: str, number: str) -> HttpResponseBase:
    """POST ``number`` to ``path`` with Django's AsyncClient, in a request thread of its own."""
    async with request_thread():
        return await AsyncClient().post(path, {"number": number})


def test_sync_view_reaches_the_outbox_and_the_handlers(alias: str) -> None:
    """A POST through the test Client writes order + outbox row and the handler gets the event."""
    response = Client().post(f"/orders/{alias}/", {"number": "V1"})
    assert response.status_code == 201
    drain()
    assert list(Order.objects.using(alias).values_list("number", flat=True)) == ["V1"]
    assert outbox_aggregates(alias) == ["V1"]
    assert RECEIVED.numbers() == ["V1"]
    assert get_seam().running  # started lazily by the first publish, in this process


def test_requests_from_many_threads_all_arrive(sqlite_alias: str) -> None:
    """Concurrent request threads each commit and hand their event to the one bus."""
    numbers = [f"T{n}" for n in range(8)]
    errors: list[BaseException] = []

    def post(number: str) -> None:
        try:
            assert Client().post(f"/orders/{sqlite_alias}/", {"number": number}).status_code == 201
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=post, args=(number,)) for number in numbers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    drain()
    assert errors == []
    assert sorted(outbox_aggregates(sqlite_alias)) == numbers
    assert sorted(RECEIVED.numbers()) == numbers


@pytest.mark.anyio
async def test_async_view_commits_writes_and_events_together(alias: str) -> None:
    """An async view running its atomic write + publish via sync_to_async reaches outbox and handler."""
    response = await post_async(f"/async-orders/{alias}/", "AV1")
    assert response.status_code == 201
    await anyio.to_thread.run_sync(drain)
    assert await anyio.to_thread.run_sync(outbox_aggregates_closing, alias) == ["AV1"]
    assert RECEIVED.numbers() == ["AV1"]


@pytest.mark.anyio
async def test_async_view_apublish(alias: str) -> None:
    """An async view's apublish commits the event on Django's connection and dispatches it."""
    response = await post_async(f"/async-events/{alias}/", "AP1")
    assert response.status_code == 202
    await anyio.to_thread.run_sync(drain)
    assert await anyio.to_thread.run_sync(outbox_aggregates_closing, alias) == ["AP1"]
    assert RECEIVED.numbers() == ["AP1"]


@pytest.mark.anyio
async def test_apublish_outside_a_view(alias: str) -> None:
    """apublish from plain async code writes and dispatches like publish."""
    async with request_thread():
        await apublish(OrderPlaced(aggregate_id="AP2", number="AP2"), using=alias)
    await anyio.to_thread.run_sync(drain)
    assert await anyio.to_thread.run_sync(outbox_aggregates_closing, alias) == ["AP2"]
    assert RECEIVED.numbers() == ["AP2"]
