"""``eventseam dlq`` lists copies of one Kafka dead letter once; replay and discard resolve them all.

Copies (the same ``dlq_handler`` and original topic/partition/offset) are what a worker killed
between a dead-letter ack and its offset commit wrote before the runner's dead-letter marks; here
they are produced by hand next to the runner's own records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from sqlalchemy import func, select

from outbox.dead_letter_table import dlq_resolved
from tests.broker.runner_conftest import produce
from tests.broker.test_dlq_replay import _reset, cli, cli_json, consume_with_failures, seam
from tests.integration.replay_app import FAILING, LABEL, applications, engine_of
from tests.kafka_broker import read_topic

if TYPE_CHECKING:
    from engine.seam import EventSeam
    from outbox.bundled_broker import BundledBroker

pytestmark = [pytest.mark.anyio, pytest.mark.broker]
__all__ = ["_reset", "seam"]  # fixtures of test_dlq_replay used here


async def test_copies_of_a_dead_letter_are_listed_once_and_resolved_together(
    seam: EventSeam, kafka_broker: BundledBroker, topic_prefix: str
) -> None:
    """Each of two dead letters written twice: listed once under the first copy's id; discard and replay mark both copies resolved."""
    await consume_with_failures(seam)
    bootstrap, topic = kafka_broker.bootstrap_servers, f"{topic_prefix}dlq.{LABEL}"
    originals = await read_topic(bootstrap, topic, expected=2)
    for record in originals:
        copy = (record.key, record.value or b"", list(record.headers))
        await produce(bootstrap, topic, [copy], partition=record.partition)
    assert len(await read_topic(bootstrap, topic, expected=4)) == 4

    listed = await cli_json(seam, topic_prefix, "dlq", "list")
    first_ids = {f"{topic}:{record.partition}:{record.offset}" for record in originals}
    assert {letter["id"] for letter in listed} == first_ids
    assert sorted(letter["payload"]["n"] for letter in listed) == [2, 4]
    two, four = sorted(listed, key=lambda letter: letter["payload"]["n"])

    dropped = await cli(seam, topic_prefix, "dlq", "discard", four["id"])
    assert dropped.exit_code == 0, dropped.output
    assert [letter["id"] for letter in await cli_json(seam, topic_prefix, "dlq", "list")] == [
        two["id"]
    ]
    FAILING["on"] = False
    replayed = await cli(seam, topic_prefix, "dlq", "replay", "--all")
    assert replayed.exit_code == 0, replayed.output
    assert "replayed 1: delivered 1, already applied 0, failed 0" in replayed.stdout
    assert await cli_json(seam, topic_prefix, "dlq", "list") == []
    assert applications(engine_of(seam))[LABEL] == 5

    with engine_of(seam).connect() as connection:
        resolved = connection.execute(
            select(dlq_resolved.c.action, func.count()).group_by(dlq_resolved.c.action)
        )
        assert dict(resolved.all()) == {"discarded": 2, "replayed": 2}
