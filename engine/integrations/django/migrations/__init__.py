"""Django migrations of eventseam's tables: each runs one revision of the shipped Alembic history."""

from __future__ import annotations
