"""Rows the broker can never take are parked without holding up other aggregates; operators handle them."""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
import pytest
from click.testing import CliRunner

from engine.cli import main
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

TOO_BIG = "x" * 3000  # over max_request_size=2048 below


async def cli(*args: str) -> str:
    """Run ``eventseam`` in-process, in a worker thread; its output (fails the test on a
    non-zero exit).

    Not on the event loop: the relay under test runs there, and on SQLite a relay statement
    whose rows the loop has not collected yet keeps its lock, so a command blocking the loop
    waited the busy timeout out and failed with "database is locked" (seen in CI).
    """
    invoke = functools.partial(CliRunner().invoke, main, list(args), catch_exceptions=False)
    result = await anyio.to_thread.run_sync(invoke)
    assert result.exit_code == 0, result.output
    return result.output


def status_of(engine: Engine, event_id: object) -> str | None:
    """Status of the row of ``event_id`` (None when it is gone)."""
    return next((row.status for row in outbox_rows(engine) if row.id == event_id), None)


async def test_oversized_row_is_parked_without_blocking_neighbours(
    outbox_db: Engine, kafka_broker: BundledBroker, topic_prefix: str
) -> None:
    """An oversized row is retried max_attempts times then parked, while other aggregates and its own later rows flow."""
    url = outbox_db.url.render_as_string(hide_password=False)
    first = write_events(outbox_db, [item("heavy", 1, note=TOO_BIG)])[0]
    write_events(
        outbox_db, [item("heavy", 2)] + [item(f"light-{n % 5}", 10 + n) for n in range(20)]
    )
    settings = relay_settings(
        url,
        kafka_broker.bootstrap_servers,
        topic_prefix,
        max_attempts=3,
        kafka={"max_request_size": 2048},
    )
    async with relay_running(settings):
        await wait_for(
            lambda: [row.status for row in outbox_rows(outbox_db)] == [Status.PARKED],
            message="only the big row left, parked",
        )
        records = await read_topic(
            kafka_broker.bootstrap_servers, f"{topic_prefix}orders", expected=21
        )
        assert sorted(json.loads(record.value)["n"] for record in records) == [2, *range(10, 30)]
        [parked] = outbox_rows(outbox_db)
        assert parked.attempts == 3
        listing = await cli("outbox", "parked", "list", "--url", url)
        assert str(first.event_id) in listing
        assert "max_request_size" in listing
        assert "back to pending" in await cli(
            "outbox", "parked", "retry", str(first.event_id), "--url", url
        )
        await wait_for(
            lambda: (
                outbox_rows(outbox_db)[0].attempts == 3
                and status_of(outbox_db, first.event_id) == Status.PARKED
            ),
            message="parked again",
        )
        assert "1 parked rows back to pending" in await cli(
            "outbox", "parked", "retry", "--all", "--url", url
        )
        await wait_for(
            lambda: status_of(outbox_db, first.event_id) == Status.PARKED,
            message="parked once more",
        )
        assert "discarded" in await cli(
            "outbox", "parked", "discard", str(first.event_id), "--url", url
        )
        assert outbox_rows(outbox_db) == []


def test_parked_commands_reject_unknown_rows(outbox_db: Engine) -> None:
    """retry and discard of an id that is not a parked row exit with status 1 and say so."""
    url = outbox_db.url.render_as_string(hide_password=False)
    write_events(outbox_db, [item("someone", 1)])
    pending_id = str(outbox_rows(outbox_db)[0].id)
    for command in ("retry", "discard"):
        result = CliRunner().invoke(main, ["outbox", "parked", command, pending_id, "--url", url])
        assert result.exit_code == 1
        assert "among parked rows" in result.output
    listing = CliRunner().invoke(main, ["outbox", "parked", "list", "--url", url])
    assert listing.exit_code == 0, listing.output
    assert "no parked rows" in listing.output
