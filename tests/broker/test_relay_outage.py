"""Broker outage: the relay backs off, keeps rows pending, re-creates lost topics and drains after recovery."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import TYPE_CHECKING

import anyio
import pytest

from outbox.table import Status
from tests.kafka_broker import (
    item,
    outbox_rows,
    partition_count,
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


async def test_broker_restart_loses_nothing_committed(
    outbox_db: Engine, private_broker: BundledBroker, topic_prefix: str
) -> None:
    """Rows written while the broker is down stay pending, then reach the re-created topic (own partitions, not auto-created) in order."""
    bootstrap = private_broker.bootstrap_servers
    topic = f"{topic_prefix}orders"
    url = outbox_db.url.render_as_string(hide_password=False)
    settings = relay_settings(url, bootstrap, topic_prefix, partitions=3)
    async with relay_running(settings):
        write_events(outbox_db, [item(f"o{n % 5}", n) for n in range(40)])
        await wait_for(lambda: not outbox_rows(outbox_db), message="first batch sent")
        assert len(await read_topic(bootstrap, topic, expected=40)) == 40
        private_broker.stop()
        for start in range(100, 160, 20):
            write_events(outbox_db, [item(f"o{n % 5}", n) for n in range(start, start + 20)])
            await anyio.sleep(0.5)
        rows = outbox_rows(outbox_db)
        assert len(rows) == 60
        assert {row.status for row in rows} == {Status.PENDING}
        private_broker.start()
        await wait_for(
            lambda: not outbox_rows(outbox_db),
            timeout=90,
            message="backlog drained after the restart",
        )
    assert (
        await partition_count(bootstrap, topic) == 3
    )  # created by the relay, not auto-created (4)
    records = await read_topic(bootstrap, topic, expected=60)
    numbers: dict[bytes | None, list[int]] = defaultdict(list)
    for record in records:  # consumers drop duplicates by event id: keep first sightings
        n = json.loads(record.value)["n"]
        if n not in numbers[record.key]:
            numbers[record.key].append(n)
    assert sorted(n for values in numbers.values() for n in values) == list(range(100, 160))
    for values in numbers.values():
        assert values == sorted(values)
