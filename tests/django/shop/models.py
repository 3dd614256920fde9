"""The business table the tests write next to the outbox."""

from __future__ import annotations

from django.db import models


class Order(models.Model):
    """An order, written by the views and tests in the same transaction as its events."""

    number: models.CharField[str, str] = models.CharField(max_length=40, unique=True)

    class Meta:
        app_label = "shop"

    def __str__(self) -> str:
        return str(self.number)
