"""The migration path under load: a context flipped local <-> dual <-> broker while events flow.

``shop`` owns ItemSold; ``ledger`` handles it twice (``book_sale`` and ``count_sale``), each
writing one ``migration_applied`` row per application in its handler transaction. The monolith
(an EventSeam with Kafka configured) runs the in-memory bus and, in the same process, the consumer
runner for its in-process handlers; a relay forwards the outbox. Flips go through the operator's
command, ``eventseam flags set``, and the running seam follows within its refresh interval.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
import pytest
from click.testing import CliRunner
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, func, select
from sqlalchemy.orm import sessionmaker

from engine.cli import main
from engine.contexts import BoundedContext
from engine.events import DomainEvent
from engine.modes import Mode
from engine.parity import context_parity
from engine.seam import EventSeam
from engine.settings import (
    ConsumerSettings,
    EventSeamSettings,
    KafkaSettings,
    RelaySettings,
    TopicSettings,
)
from outbox.table import Status, outbox
from tests.kafka_broker import create_outbox, relay_running, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

    from engine.handler_context import HandlerContext
    from outbox.bundled_broker import BundledBroker

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

EVENTS = 10_000
PER_TRANSACTION = 50
#: The mode of ``shop`` for each slice of the events: 7 flips, every transition between modes.
MODES = ("local", "dual", "broker", "local", "dual", "local", "broker", "dual")
HANDLERS = ("ledger.book_sale", "ledger.count_sale")


class ItemSold(DomainEvent, name="tests.migration.ItemSold", version=1):
    """An item was sold at the shop."""

    n: int


applied = Table(
    "migration_applied",
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("handler", String(200), nullable=False),
    Column("event_id", String(40), nullable=False),
)

shop = BoundedContext("shop", owns=[ItemSold])
ledger = BoundedContext("ledger")


@ledger.handler(ItemSold, name="book_sale")
def book_sale(event: ItemSold, ctx: HandlerContext) -> None:
    """Write one row per application, in the handler's transaction."""
    ctx.session.execute(
        applied.insert().values(handler=ctx.handler_name, event_id=str(event.event_id))
    )


@ledger.handler(ItemSold, name="count_sale")
def count_sale(event: ItemSold, ctx: HandlerContext) -> None:
    """A second subscriber of the same events (its own inbox rows and consumer group)."""
    ctx.session.execute(
        applied.insert().values(handler=ctx.handler_name, event_id=str(event.event_id))
    )


def settings(database_url: str, bootstrap: str, prefix: str) -> EventSeamSettings:
    """The monolith's settings: Kafka configured, flags re-read every 0.1 s, fast relay and consumers."""
    return EventSeamSettings(
        database_url=database_url,
        flag_refresh_seconds=0.1,
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap, enable_idempotence="off", request_timeout_ms=5000
        ),
        relay=RelaySettings(
            topic_prefix=prefix,
            poll_interval=0.05,
            lease_seconds=2.0,
            backoff_max=0.5,
            retention_seconds=3600,  # keep published and local rows: they show each event's mode
        ),
        consumer=ConsumerSettings(
            group_prefix=f"{prefix}g.",
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            fetch_max_wait_ms=20,
            backoff_initial=0.01,
            backoff_max=0.1,
        ),
        topics={"shop": TopicSettings(partitions=3)},
    )


@pytest.fixture
def monolith(
    postgres_url: str, kafka_broker: BundledBroker, topic_prefix: str
) -> Iterator[EventSeam]:
    """The shop/ledger monolith on a fresh PostgreSQL database (eventseam tables + migration_applied)."""
    engine = create_outbox(postgres_url)
    applied.metadata.create_all(engine)
    config = settings(postgres_url, kafka_broker.bootstrap_servers, topic_prefix)
    yield EventSeam(config, [shop, ledger], session_factory=sessionmaker(engine))
    engine.dispose()


def flip(database_url: str, mode: str) -> None:
    """``eventseam flags set shop MODE``, as an operator runs it."""
    result = CliRunner().invoke(
        main,
        ["flags", "set", "shop", mode, "--contexts", "shop,ledger", "--database-url", database_url],
    )
    assert result.exit_code == 0, result.output


def publish_slice(seam: EventSeam, first: int, count: int) -> None:
    """Publish ItemSold ``first`` .. ``first + count - 1``, PER_TRANSACTION per transaction."""
    for start in range(first, first + count, PER_TRANSACTION):
        with seam.transaction() as unit:
            unit.publish(
                *(
                    ItemSold(aggregate_id=f"item-{n % 37}", n=n)
                    for n in range(start, start + PER_TRANSACTION)
                )
            )


def rows_per_handler(engine: Engine) -> dict[str, Counter[str]]:
    """Rows of migration_applied per handler, counted per event id."""
    counts: dict[str, Counter[str]] = {name: Counter() for name in HANDLERS}
    with engine.connect() as connection:
        query = select(applied.c.handler, applied.c.event_id, func.count()).group_by(
            applied.c.handler, applied.c.event_id
        )
        for handler, event_id, count in connection.execute(query):
            counts[handler][event_id] = count
    return counts


def applied_events(engine: Engine) -> dict[str, int]:
    """Distinct events applied per handler (0 for a handler that applied none)."""
    with engine.connect() as connection:
        query = select(applied.c.handler, func.count(applied.c.event_id.distinct())).group_by(
            applied.c.handler
        )
        found = {handler: int(count) for handler, count in connection.execute(query)}
    return {name: found.get(name, 0) for name in HANDLERS}


def outbox_modes(engine: Engine) -> Counter[str]:
    """Outbox rows still present, by the mode they were written in (relayed rows are deleted)."""
    with engine.connect() as connection:
        rows = connection.execute(select(outbox.c.mode, outbox.c.status))
        return Counter(f"{mode}/{status}" for mode, status in rows)


def pending(engine: Engine) -> int:
    """Outbox rows the relay has not sent yet."""
    with engine.connect() as connection:
        query = select(func.count()).where(outbox.c.status == Status.PENDING)
        return int(connection.execute(query).scalar_one())


async def test_flips_while_events_flow_lose_nothing_and_apply_nothing_twice(
    monolith: EventSeam, postgres_url: str
) -> None:
    """10,000 events published while shop flips 7 times across local, dual and broker: each handler applies each event exactly once, and parity holds."""
    assert monolith.session_factory is not None
    engine = monolith.session_factory.kw["bind"]
    size = EVENTS // len(MODES)
    async with anyio.create_task_group() as group:
        await group.start(monolith.run)
        async with relay_running(monolith.settings):
            for number, mode in enumerate(MODES):
                await anyio.to_thread.run_sync(flip, postgres_url, mode)
                wanted = Mode(mode)
                await wait_for(lambda: monolith.mode_of("shop") is wanted, timeout=10)  # noqa: B023 - awaited here
                await anyio.to_thread.run_sync(publish_slice, monolith, number * size, size)
            await wait_for(
                lambda: all(count == EVENTS for count in applied_events(engine).values()),
                timeout=240,  # budget for a loaded machine: the test took 123 s at load average 6
                interval=0.25,
                message="every handler applied every event",
                in_thread=True,
            )
            await wait_for(
                lambda: pending(engine) == 0, message="the relay sent everything", in_thread=True
            )
            runner = monolith.consumer_runner
            assert runner is not None
            await wait_for(
                lambda: all(sum(lag.values()) == 0 for lag in runner.lag().values()),
                message="the consumers caught up",
            )
            await monolith.join()
            stats = runner.stats()
            report = await context_parity(monolith, "shop")
        await monolith.aclose()
    counts = rows_per_handler(engine)
    kept = outbox_modes(engine)
    for name in HANDLERS:
        lost = EVENTS - len(counts[name])
        twice = sum(1 for count in counts[name].values() if count > 1)
        assert (name, lost, twice) == (name, 0, 0)
        # The Kafka path applied the broker slices, and the dual ones it reached first (the bus
        # won the others); never a local slice's event.
        assert 2 * size <= stats[name].applied <= 5 * size
        assert stats[name].dead_lettered == 0
    assert kept == {
        "local/local": 3 * size,
        "dual/published": 3 * size,
        "broker/published": 2 * size,
    }
    assert monolith.bus.dead_letters.count() == 0
    # eventseam parity --context shop: both paths delivered everything they carry, lag 0.
    assert report.ok
    assert {h.handler for h in report.handlers} == set(HANDLERS)
    for handler in report.handlers:
        assert (handler.local_delivered, handler.local_expected) == (6 * size, 6 * size)
        assert (handler.kafka_delivered, handler.kafka_expected) == (5 * size, 5 * size)
        assert (handler.applied, handler.lag) == (EVENTS, 0)


def test_flags_set_rejects_an_unknown_context_or_mode(postgres_url: str) -> None:
    """`eventseam flags set` exits 2 and names the choices for an unknown context or an unknown mode."""
    engine = create_outbox(postgres_url)
    engine.dispose()
    base = ["--contexts", "shop,ledger", "--database-url", postgres_url]
    context = CliRunner().invoke(main, ["flags", "set", "shpo", "dual", *base])
    mode = CliRunner().invoke(main, ["flags", "set", "shop", "kafka", *base])
    assert context.exit_code == 2, context.output
    assert "shpo" in context.output
    assert "known contexts: ledger, shop" in context.output
    assert mode.exit_code == 2, mode.output
    assert "local, dual, broker" in mode.output
