"""Deleting expired rows in bounded batches: the loop behind ``eventseam inbox purge``.

A purge statement deletes at most ``:limit`` rows older than ``:cutoff`` (engine.inbox and
engine.dead_letter_marks build theirs); ``delete_in_batches`` runs it until a batch comes back
short, committing after each one so locks and WAL stay bounded. The relay's Purger
(outbox.retention) runs the same statements on its own asynchronous connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy import Connection
    from sqlalchemy.sql import Delete


def delete_in_batches(
    connection: Connection, statement: Delete, cutoff: datetime, batch: int
) -> int:
    """Run ``statement`` with ``cutoff`` and ``limit=batch`` until fewer rows go; how many went.

    Commits after every batch: give it a connection of its own, not one inside
    ``engine.begin()`` or a business transaction.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    parameters = {"cutoff": cutoff, "limit": batch}
    total = 0
    while True:
        deleted = connection.execute(statement, parameters).rowcount
        connection.commit()
        total += deleted
        if deleted < batch:
            return total
