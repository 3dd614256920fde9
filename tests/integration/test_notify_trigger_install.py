"""``install_notify_trigger`` from several processes at once (every worker of a fleet starting).

Concurrent ``CREATE OR REPLACE FUNCTION`` on one function fails in PostgreSQL with "tuple
concurrently updated"; the installer takes the schema lock first, so simultaneous installs
queue up instead (threads here, each on its own connection, as processes would be).
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import create_engine, text

from outbox.notify import TRIGGER, install_notify_trigger
from outbox.table import metadata

pytestmark = pytest.mark.postgres

THREADS, ROUNDS = 6, 15


def test_simultaneous_installs_all_succeed(postgres_url: str) -> None:
    """Six threads installing fifteen times each, released together: no error, one trigger."""
    engine = create_engine(postgres_url, pool_size=THREADS)
    metadata.create_all(engine)
    start = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def install() -> None:
        start.wait()
        for _ in range(ROUNDS):
            try:
                install_notify_trigger(engine)
            except Exception as exc:  # collected and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=install) for _ in range(THREADS)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        with engine.connect() as connection:
            triggers = connection.execute(
                text("SELECT count(*) FROM pg_trigger WHERE tgname = :name"), {"name": TRIGGER}
            ).scalar_one()
    finally:
        engine.dispose()
    assert errors == []
    assert triggers == 1
