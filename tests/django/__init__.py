"""Tests of the Django integration (engine.integrations.django) on SQLite and PostgreSQL."""

from __future__ import annotations
