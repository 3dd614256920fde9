"""A tiny Django app for the tests: an Order model and three bounded contexts."""

from __future__ import annotations
