"""``eventseam dlq`` on the consumers' dead-letter topics, and ``eventseam replay`` from Kafka.

Against the bundled broker: warehouse's StockCounted go outbox -> relay -> Kafka (retention 0:
the outbox keeps nothing), the consumer runner runs shelves' handlers, and label_shelf fails for
good on two of them, which land on its dead-letter topic. The CLI (tests.integration.replay_app)
then lists, shows, replays and discards them, and replays the window from the topic itself.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import pytest
import structlog

from engine.dlq import DeadLetters
from engine.runner import ConsumerRunner
from tests.broker.runner_conftest import produce, raw
from tests.integration.replay_app import (
    COUNT,
    FAILING,
    LABEL,
    applications,
    build_seam,
    counted,
    engine_of,
    invoke,
)
from tests.kafka_broker import outbox_rows, relay_running, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

    from click.testing import Result

    from engine.seam import EventSeam
    from outbox.bundled_broker import BundledBroker

pytestmark = [pytest.mark.anyio, pytest.mark.broker]


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    """Quiet engine logs; FAILING on; both undone afterwards (the CLI configures structlog)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    FAILING["on"] = True
    yield
    FAILING["on"] = True
    structlog.reset_defaults()


@pytest.fixture
def seam(database_url: str, kafka_broker: BundledBroker, topic_prefix: str) -> Iterator[EventSeam]:
    """The application with warehouse and shelves in broker mode, on the bundled broker."""
    app = build_seam(database_url, bootstrap=kafka_broker.bootstrap_servers, prefix=topic_prefix)
    yield app
    engine_of(app).dispose()


async def cli(seam: EventSeam, prefix: str, *args: str) -> Result:
    """``eventseam ARGS`` on the test application (in a thread: it runs its own event loop)."""
    env = {
        "REPLAY_TEST_DATABASE": seam.settings.database_url,
        "REPLAY_TEST_BOOTSTRAP": str(seam.settings.kafka.bootstrap_servers),
        "REPLAY_TEST_PREFIX": prefix,
    }
    return await anyio.to_thread.run_sync(functools.partial(invoke, list(args), env))


async def cli_json(seam: EventSeam, prefix: str, *args: str) -> Any:
    """``eventseam ARGS --json``, which must exit 0."""
    result = await cli(seam, prefix, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


async def consume_with_failures(seam: EventSeam) -> None:
    """Publish 6 counts (2 failing), relay them, run shelves' handlers until both failures are dead letters."""
    with seam.transaction() as unit:
        unit.publish(*(counted(n, fail=n in {2, 4}) for n in range(6)))
    engine = engine_of(seam)
    async with relay_running(seam.settings):
        await wait_for(lambda: not outbox_rows(engine), message="every row relayed")
    runner = ConsumerRunner(seam, ["shelves"])
    async with anyio.create_task_group() as group:
        await group.start(runner.run)
        await wait_for(lambda: applications(engine) == {LABEL: 4, COUNT: 6}, message="applied")
        await wait_for(lambda: runner.stats()[LABEL].dead_lettered == 2, message="2 dead letters")
        runner.stop()
    assert len(await DeadLetters(seam).list()) == 2


async def test_kafka_dead_letters_list_show_replay_discard(
    seam: EventSeam, topic_prefix: str
) -> None:
    """Two dead-letter records: listed with their headers; a failing replay keeps one, a fixed one resolves it; discard drops the other."""
    await consume_with_failures(seam)
    listed = await cli_json(seam, topic_prefix, "dlq", "list")
    topic = f"{topic_prefix}dlq.{LABEL}"
    assert sorted(x["payload"]["n"] for x in listed) == [2, 4]
    assert {(x["kind"], x["handler"], x["reason"], x["attempts"]) for x in listed} == {
        ("kafka", LABEL, "handler-failed", 2)
    }
    assert all(x["id"].startswith(f"{topic}:") for x in listed)
    two, four = sorted(listed, key=lambda x: x["payload"]["n"])
    shown = await cli_json(seam, topic_prefix, "dlq", "show", two["id"])
    assert shown["error_message"] == "shelf 2 is jammed"
    assert shown["event_type"] == "tests.replay.StockCounted"

    failing = await cli(seam, topic_prefix, "dlq", "replay", two["id"])
    assert failing.exit_code == 1
    assert "failed: ShelfJammedError: shelf 2 is jammed" in failing.stdout
    FAILING["on"] = False
    fixed = await cli(seam, topic_prefix, "dlq", "replay", two["id"])
    assert fixed.exit_code == 0, fixed.output
    assert "replayed 1: delivered 1, already applied 0, failed 0" in fixed.stdout
    assert applications(engine_of(seam))[LABEL] == 5
    dropped = await cli(seam, topic_prefix, "dlq", "discard", four["id"])
    assert dropped.exit_code == 0, dropped.output
    assert await cli_json(seam, topic_prefix, "dlq", "list") == []
    gone = await cli(seam, topic_prefix, "dlq", "show", two["id"])
    assert gone.exit_code == 1
    assert "already replayed or discarded" in gone.output
    missing = await cli(seam, topic_prefix, "dlq", "show", f"{topic}:0:999")
    assert missing.exit_code == 1
    assert f"no dead letter with id {topic}:0:999" in missing.output

    # The window replayed from the topic: the discarded event is the only one label_shelf lacks.
    window = ("replay", "--context", "shelves", "--since", "1h")
    first = await cli_json(seam, topic_prefix, *window)
    assert first["sources"] == {"kafka": 6}
    assert first["handlers"][LABEL] == {"delivered": 1, "already_applied": 5, "failed": 0}
    assert first["handlers"][COUNT] == {"delivered": 0, "already_applied": 6, "failed": 0}
    second = await cli_json(seam, topic_prefix, *window)
    assert second["handlers"][LABEL] == {"delivered": 0, "already_applied": 6, "failed": 0}
    assert applications(engine_of(seam)) == {LABEL: 6, COUNT: 6}


async def test_a_record_that_does_not_decode_can_only_be_discarded(
    seam: EventSeam, kafka_broker: BundledBroker, topic_prefix: str
) -> None:
    """A malformed record dead-lettered by both handlers: replay fails naming the reason (exit 1), discard resolves it; replay --since reports it unreadable."""
    good = raw(counted(1))
    bad = (good[0], b"{not json", good[2])
    await produce(kafka_broker.bootstrap_servers, f"{topic_prefix}warehouse", [good, bad])
    engine = engine_of(seam)
    runner = ConsumerRunner(seam, ["shelves"])
    async with anyio.create_task_group() as group:
        await group.start(runner.run)
        await wait_for(lambda: applications(engine) == {LABEL: 1, COUNT: 1}, message="applied")
        await wait_for(
            lambda: sum(s.dead_lettered for s in runner.stats().values()) == 2,
            message="the bad record dead-lettered by both handlers",
        )
        runner.stop()
    listed = await cli_json(seam, topic_prefix, "dlq", "list")
    assert sorted((x["handler"], x["reason"], x["attempts"]) for x in listed) == [
        (COUNT, "bad-json", 0),
        (LABEL, "bad-json", 0),
    ]
    ids = [x["id"] for x in listed]
    again = await cli(seam, topic_prefix, "dlq", "replay", *ids)
    assert again.exit_code == 1
    assert again.stdout.count("failed: the record does not decode (bad-json): discard it") == 2
    dropped = await cli(seam, topic_prefix, "dlq", "discard", *ids)
    assert dropped.exit_code == 0, dropped.output
    assert await cli_json(seam, topic_prefix, "dlq", "list") == []
    window = await cli(seam, topic_prefix, "replay", "--context", "shelves", "--since", "1h")
    assert window.exit_code == 1
    assert f"unreadable kafka record {topic_prefix}warehouse:" in window.stdout
