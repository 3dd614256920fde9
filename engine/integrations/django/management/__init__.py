"""Management commands of eventseam's Django app."""

from __future__ import annotations
