"""Marks of resolved Kafka dead letters go once Kafka no longer holds their records.

``eventseam dlq replay/discard`` forget, in the transaction that marks a record, the marks of
that topic's records below their partition's log start (engine.dead_letter_db.forget_gone).
The bundled broker never moves a log start (no retention, no DeleteRecords), so the broker
tests check that marks at or past it stay; here the log starts are given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from engine import dead_letter_db
from outbox.dead_letter_table import Resolution, dlq_resolved

if TYPE_CHECKING:
    from sqlalchemy import Engine

TOPIC, OTHER = "t.dlq.ledger.book_sale", "t.dlq.ledger.count_sale"


def mark(engine: Engine, topic: str, partition: int, offsets: range) -> None:
    """Discarded-marks for ``offsets`` of ``topic``/``partition``."""
    with engine.begin() as connection:
        for offset in offsets:
            dead_letter_db.mark_resolved(
                connection, (topic, partition, offset), Resolution.DISCARDED
            )


def left(engine: Engine) -> list[tuple[str, int, int]]:
    """Every mark's location, sorted."""
    columns = (dlq_resolved.c.topic, dlq_resolved.c.partition_no, dlq_resolved.c.record_offset)
    with engine.connect() as connection:
        return sorted((t, int(p), int(o)) for t, p, o in connection.execute(select(*columns)))


def test_marks_below_the_log_start_are_forgotten_and_the_rest_stay(sync_db: Engine) -> None:
    """Per partition: marks below its start go; at or past it, of other partitions or topics, stay."""
    mark(sync_db, TOPIC, 0, range(0, 6))
    mark(sync_db, TOPIC, 1, range(0, 3))
    mark(sync_db, TOPIC, 2, range(0, 2))
    mark(sync_db, OTHER, 0, range(0, 2))
    starts = {(TOPIC, 0): 4, (TOPIC, 1): 0, (TOPIC, 2): 1}
    with sync_db.begin() as connection:
        assert dead_letter_db.forget_gone(connection, starts) == 4 + 1
    assert left(sync_db) == [
        (TOPIC, 0, 4),
        (TOPIC, 0, 5),
        (TOPIC, 1, 0),
        (TOPIC, 1, 1),
        (TOPIC, 1, 2),
        (TOPIC, 2, 1),
        (OTHER, 0, 0),
        (OTHER, 0, 1),
    ]
    with sync_db.begin() as connection:
        assert dead_letter_db.forget_gone(connection, starts) == 0
