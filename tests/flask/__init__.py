"""Tests of engine.integrations.flask (Flask + Flask-SQLAlchemy) on SQLite and PostgreSQL."""

from __future__ import annotations
