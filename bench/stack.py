"""The services a benchmark runs against: a fresh PostgreSQL database and a Kafka broker.

``EVENTSEAM_BENCH_POSTGRES`` names the server's admin database (default: the local server's
``postgres``); ``EVENTSEAM_BENCH_KAFKA`` names a broker to use instead of starting the bundled one.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from outbox.bundled_broker import BundledBroker

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sqlalchemy import Engine

__all__ = ["POSTGRES_ADMIN_URL", "bootstrap_servers", "fresh_database"]

POSTGRES_ADMIN_URL: Final = os.environ.get(
    "EVENTSEAM_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@contextmanager
def fresh_database(make_schema: Callable[[Engine], object]) -> Iterator[str]:
    """The URL of a new PostgreSQL database, ``make_schema`` run on it; dropped afterwards."""
    name = f"eventseam_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        engine = create_engine(url)
        make_schema(engine)
        engine.dispose()
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def bootstrap_servers() -> Iterator[str]:
    """EVENTSEAM_BENCH_KAFKA, or a bundled broker started for this run."""
    given = os.environ.get("EVENTSEAM_BENCH_KAFKA")
    if given:
        yield given
        return
    with BundledBroker() as broker:
        yield broker.bootstrap_servers
