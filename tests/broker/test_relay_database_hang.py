"""A relay whose database stops answering (connections accepted, nothing sent back) gives up on it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from engine.health import DATABASE
from tests.kafka_broker import (
    item,
    outbox_rows,
    relay_running,
    relay_settings,
    wait_for,
    write_events,
)
from tests.reliability.net_stack import proxied_database

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from outbox.bundled_broker import BundledBroker

pytestmark = [pytest.mark.anyio, pytest.mark.broker, pytest.mark.postgres]


async def test_relay_gives_up_on_a_database_that_stops_answering(
    postgres_outbox: Engine, kafka_broker: BundledBroker, topic_prefix: str
) -> None:
    """With command_timeout 1 s, a hung database shows as failing on the relay's condition within seconds (a TimeoutError, not a wait for TCP to give up); once it answers again the relay reconnects, drains the rows written meanwhile and is ready."""
    url = postgres_outbox.url.render_as_string(hide_password=False)
    with proxied_database(url) as (through_proxy, proxy):
        settings = relay_settings(
            through_proxy, kafka_broker.bootstrap_servers, topic_prefix, command_timeout=1.0
        )
        async with relay_running(settings) as relay:
            write_events(postgres_outbox, [item(f"o{n % 3}", n) for n in range(10)])
            await wait_for(lambda: not outbox_rows(postgres_outbox), message="sent before the hang")
            proxy.hang()
            write_events(postgres_outbox, [item(f"o{n % 3}", n) for n in range(10, 20)])
            await wait_for(
                lambda: DATABASE in relay.condition.problems,
                timeout=20,
                message="the relay reports the hung database",
            )
            assert relay.condition.problems[DATABASE].startswith("TimeoutError")
            assert len(outbox_rows(postgres_outbox)) == 10
            proxy.restore()
            await wait_for(
                lambda: not outbox_rows(postgres_outbox), timeout=60, message="drained after"
            )
            await wait_for(lambda: relay.condition.ready, message="ready again")
