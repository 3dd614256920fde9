"""The application the replay and dead-letter tests drive: three small contexts on one database.

``warehouse`` owns StockCounted; ``shelves`` handles it twice (``label_shelf`` writes a row and
publishes ShelfLabeled, ``count_stock`` writes a row); ``audit`` notes every ShelfLabeled. Every
handler writes one ``replay_applied`` row per application, so tests count applications exactly.
``label_shelf`` raises for a StockCounted with ``fail=True`` while ``FAILING["on"]``.

``replay_app`` is the application factory the CLI loads (``--app``): it reads
REPLAY_TEST_DATABASE and, when set, REPLAY_TEST_BOOTSTRAP and REPLAY_TEST_PREFIX.
"""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
from click.testing import CliRunner, Result
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    func,
    select,
)
from sqlalchemy.orm import sessionmaker

from engine.cli import main
from engine.contexts import BoundedContext
from engine.events import DomainEvent
from engine.modes import Mode
from engine.seam import EventSeam
from engine.settings import (
    BusSettings,
    ConsumerSettings,
    EventSeamSettings,
    KafkaSettings,
    RelaySettings,
)
from outbox.inbox_table import inbox
from outbox.table import metadata

if TYPE_CHECKING:
    from collections.abc import Sequence

    from engine.handler_context import HandlerContext


class StockCounted(DomainEvent, name="tests.replay.StockCounted", version=1):
    """A shelf's stock was counted."""

    n: int
    fail: bool = False


class ShelfLabeled(DomainEvent, name="tests.replay.ShelfLabeled", version=1):
    """A shelf got its label (the follow-up of label_shelf)."""

    n: int


applied = Table(
    "replay_applied",
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("handler", String(100), nullable=False),
    Column("event_id", String(40), nullable=False),
    Column("n", Integer, nullable=False),
)

warehouse = BoundedContext("warehouse", owns=[StockCounted])
shelves = BoundedContext("shelves", owns=[ShelfLabeled])
audit = BoundedContext("audit")
#: While on, label_shelf raises for events with ``fail=True``.
FAILING = {"on": True}

LABEL = "shelves.label_shelf"
COUNT = "shelves.count_stock"
NOTE = "audit.note_label"


class ShelfJammedError(RuntimeError):
    """Raised by label_shelf for a failing count."""


def _applied(ctx: HandlerContext, event: StockCounted | ShelfLabeled) -> None:
    ctx.session.execute(
        applied.insert().values(handler=ctx.handler_name, event_id=str(event.event_id), n=event.n)
    )


@shelves.handler(StockCounted, name="label_shelf")
def label_shelf(event: StockCounted, ctx: HandlerContext) -> None:
    """Write a row and publish ShelfLabeled; raise for a failing count while FAILING is on."""
    if event.fail and FAILING["on"]:
        raise ShelfJammedError(f"shelf {event.n} is jammed")
    _applied(ctx, event)
    ctx.publish(ShelfLabeled(aggregate_id=event.aggregate_id, n=event.n))


@shelves.handler(StockCounted, name="count_stock")
def count_stock(event: StockCounted, ctx: HandlerContext) -> None:
    """Write a row."""
    _applied(ctx, event)


@audit.handler(ShelfLabeled, name="note_label")
def note_label(event: ShelfLabeled, ctx: HandlerContext) -> None:
    """Write a row."""
    _applied(ctx, event)


def build_seam(
    database_url: str, *, bootstrap: str | None = None, prefix: str = "eventseam."
) -> EventSeam:
    """The application on ``database_url`` (tables created); Kafka when ``bootstrap`` is set."""
    engine = create_engine(database_url)
    metadata.create_all(engine)
    applied.metadata.create_all(engine)
    settings = EventSeamSettings(
        database_url=database_url,
        bus=BusSettings(max_attempts=1),
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap, enable_idempotence="off", request_timeout_ms=5000
        ),
        relay=RelaySettings(topic_prefix=prefix),
        consumer=ConsumerSettings(
            group_prefix=f"{prefix}g.",
            max_attempts=2,
            backoff_initial=0.01,
            backoff_max=0.02,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            fetch_max_wait_ms=20,
        ),
        contexts={"warehouse": Mode.BROKER, "shelves": Mode.BROKER} if bootstrap else {},
    )
    return EventSeam(
        settings, [warehouse, shelves, audit], session_factory=sessionmaker(engine), consume=False
    )


def replay_app() -> EventSeam:
    """Application factory of the CLI (REPLAY_TEST_DATABASE, _BOOTSTRAP, _PREFIX)."""
    environ = os.environ
    return build_seam(
        environ["REPLAY_TEST_DATABASE"],
        bootstrap=environ.get("REPLAY_TEST_BOOTSTRAP"),
        prefix=environ.get("REPLAY_TEST_PREFIX", "eventseam."),
    )


def engine_of(seam: EventSeam) -> Engine:
    """The engine behind the seam's sessions."""
    assert seam.session_factory is not None
    bind = seam.session_factory.kw["bind"]
    assert isinstance(bind, Engine)
    return bind


def counted(n: int, *, fail: bool = False, at: datetime | None = None) -> StockCounted:
    """A StockCounted of shelf ``n % 3`` (``at``: when it occurred, default now)."""
    return StockCounted(
        aggregate_id=f"shelf-{n % 3}", n=n, fail=fail, occurred_at=at or datetime.now(UTC)
    )


async def _publish_and_settle(seam: EventSeam, events: Sequence[DomainEvent]) -> None:
    async with anyio.create_task_group() as group:
        await group.start(seam.run)
        with seam.transaction() as unit:
            unit.publish(*events)
        await seam.join()
        await seam.aclose()


def publish(seam: EventSeam, events: Sequence[DomainEvent]) -> None:
    """Run ``seam``, publish ``events`` in one transaction, wait until the bus settled, stop."""
    anyio.run(_publish_and_settle, seam, events, backend="asyncio")


def applications(engine: Engine) -> Counter[str]:
    """replay_applied rows per handler."""
    with engine.connect() as connection:
        query = select(applied.c.handler, func.count()).group_by(applied.c.handler)
        return Counter(dict(connection.execute(query).all()))


def forget(engine: Engine, handler: str, events: Sequence[DomainEvent]) -> None:
    """Delete ``handler``'s inbox rows and applied rows of ``events``: as if never applied."""
    ids = [event.event_id for event in events]
    with engine.begin() as connection:
        connection.execute(
            delete(inbox).where(inbox.c.handler == handler, inbox.c.event_id.in_(ids))
        )
        connection.execute(
            delete(applied).where(
                applied.c.handler == handler, applied.c.event_id.in_([str(i) for i in ids])
            )
        )


def invoke(args: list[str], env: dict[str, str], **options: Any) -> Result:
    """``eventseam --app tests.integration.replay_app:replay_app ARGS`` in this process."""
    return CliRunner().invoke(
        main, ["--app", f"{__name__}:replay_app", *args], env=env, catch_exceptions=False, **options
    )
