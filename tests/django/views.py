"""Views of the Django test project: a sync view, and async views publishing two ways."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse

from engine.integrations.django import apublish, publish

from .shop.events import OrderPlaced
from .shop.models import Order


def _place(number: str, alias: str) -> Order:
    """Create the order and publish OrderPlaced in one transaction on ``alias``."""
    with transaction.atomic(using=alias):
        order = Order.objects.using(alias).create(number=number)
        publish(OrderPlaced(aggregate_id=number, number=number), using=alias)
    return order


def place_order(request: HttpRequest, alias: str) -> HttpResponse:
    """POST number=N: write the order and its event in one transaction (request thread)."""
    order = _place(request.POST["number"], alias)
    return JsonResponse({"id": order.pk, "number": order.number}, status=201)


async def place_order_async(request: HttpRequest, alias: str) -> HttpResponse:
    """Async view: the atomic write + publish runs in Django's sync thread (sync_to_async)."""
    order = await sync_to_async(_place)(request.POST["number"], alias)
    return JsonResponse({"id": order.pk, "number": order.number}, status=201)


async def publish_async(request: HttpRequest, alias: str) -> HttpResponse:
    """Async view: ``apublish`` commits the event in a transaction of its own."""
    number = request.POST["number"]
    await apublish(OrderPlaced(aggregate_id=number, number=number), using=alias)
    return JsonResponse({"number": number}, status=202)
