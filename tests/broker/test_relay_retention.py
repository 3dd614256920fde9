"""Retention: rows are deleted once acknowledged, or kept as published for a window and then purged."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from engine.modes import Mode
from outbox.table import Status
from tests.kafka_broker import (
    item,
    outbox_rows,
    read_topic,
    relay_running,
    relay_settings,
    wait_for,
    write_events,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from outbox.bundled_broker import BundledBroker

pytestmark = [pytest.mark.anyio, pytest.mark.broker]


async def test_published_rows_are_kept_for_the_window_then_purged(
    outbox_db: Engine, kafka_broker: BundledBroker, topic_prefix: str
) -> None:
    """With retention_seconds > 0 acknowledged rows become published (with published_at), then are purged in batches, local rows too."""
    write_events(outbox_db, [item(f"r{n % 4}", n) for n in range(30)])
    write_events(outbox_db, [item("audit", 99, context="payments")], mode=Mode.LOCAL)
    url = outbox_db.url.render_as_string(hide_password=False)
    settings = relay_settings(
        url, kafka_broker.bootstrap_servers, topic_prefix, retention_seconds=1.5, purge_batch=7
    )
    async with relay_running(settings):

        def all_published() -> bool:
            rows = [row for row in outbox_rows(outbox_db) if row.aggregateid != "audit"]
            return len(rows) == 30 and all(
                row.status == Status.PUBLISHED and row.published_at for row in rows
            )

        await wait_for(all_published, message="rows marked published")
        await wait_for(
            lambda: outbox_rows(outbox_db) == [], timeout=30, message="rows purged after the window"
        )
    assert (
        len(await read_topic(kafka_broker.bootstrap_servers, f"{topic_prefix}orders", expected=30))
        == 30
    )


async def test_retention_zero_deletes_rows_once_acknowledged(
    outbox_db: Engine, kafka_broker: BundledBroker, topic_prefix: str
) -> None:
    """With retention_seconds == 0 the relay deletes each acknowledged row and never marks one published."""
    write_events(outbox_db, [item(f"z{n % 3}", n) for n in range(25)])
    url = outbox_db.url.render_as_string(hide_password=False)
    settings = relay_settings(
        url, kafka_broker.bootstrap_servers, topic_prefix, retention_seconds=0
    )
    seen: set[str] = set()
    async with relay_running(settings):

        def drained() -> bool:
            rows = outbox_rows(outbox_db)
            seen.update(row.status for row in rows)
            return not rows

        await wait_for(drained, message="rows deleted")
    assert Status.PUBLISHED not in seen
    assert (
        len(await read_topic(kafka_broker.bootstrap_servers, f"{topic_prefix}orders", expected=25))
        == 25
    )
