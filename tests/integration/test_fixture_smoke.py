"""Smoke test of the shared database fixtures."""

from __future__ import annotations

from sqlalchemy import create_engine, text


def test_database_url_answers(database_url: str) -> None:
    """Each fixture database accepts a query."""
    engine = create_engine(database_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT 1")).scalar_one() == 1
    engine.dispose()
