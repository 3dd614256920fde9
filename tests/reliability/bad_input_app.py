"""The application of the bad-input scenario: ``intake`` publishes CrateReceived, ``ledger`` records it.

``record_crate`` writes one ``reliability_crates`` row per event; a crate with ``fail="raise"``
makes it raise on every attempt, one with ``fail="db"`` makes its SQL fail inside the handler's
transaction (a table that does not exist). ``bad_input_app`` is the factory a worker process
loads (``--app``); it reads BAD_INPUT_DATABASE / _BOOTSTRAP / _PREFIX.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, text
from sqlalchemy.orm import sessionmaker

from engine.contexts import BoundedContext
from engine.events import DomainEvent
from engine.modes import Mode
from engine.seam import EventSeam
from engine.settings import (
    ConsumerSettings,
    EventSeamSettings,
    KafkaSettings,
    RelaySettings,
    TopicSettings,
)
from outbox.table import metadata as eventseam_metadata

if TYPE_CHECKING:
    from engine.handler_context import HandlerContext

CRATE = "tests.reliability.CrateReceived"


class CrateReceived(DomainEvent, name=CRATE, version=1):
    """A crate arrived at intake; ``fail`` asks the ledger handler to fail ("raise" or "db")."""

    n: int
    note: str = ""
    fail: str = ""


class CrateRejectedError(RuntimeError):
    """Raised by record_crate for a crate with fail="raise", on every attempt."""


crates = Table(
    "reliability_crates",
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(40), nullable=False),
    Column("n", Integer, nullable=False),
)

intake = BoundedContext("intake", owns=[CrateReceived])
ledger = BoundedContext("ledger", owns=[])


@ledger.handler(CrateReceived, name="record_crate")
def record_crate(event: CrateReceived, ctx: HandlerContext) -> None:
    """Record the crate; fail as the crate asks."""
    if event.fail == "raise":
        raise CrateRejectedError(f"crate {event.n} is rejected")
    if event.fail == "db":
        ctx.session.execute(text("INSERT INTO reliability_no_such_table VALUES (1)"))
    ctx.session.execute(crates.insert().values(event_id=str(event.event_id), n=event.n))


def settings(database_url: str, bootstrap: str, prefix: str) -> EventSeamSettings:
    """intake in broker mode, own topics (prefix), quick consumer retries for the test broker."""
    return EventSeamSettings(
        database_url=database_url,
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap, enable_idempotence="off", request_timeout_ms=5000
        ),
        relay=RelaySettings(topic_prefix=prefix),
        consumer=ConsumerSettings(
            group_prefix=f"{prefix}g.",
            max_attempts=3,
            backoff_initial=0.01,
            backoff_max=0.05,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            fetch_max_wait_ms=20,
        ),
        contexts={"intake": Mode.BROKER, "ledger": Mode.BROKER},
        topics={"intake": TopicSettings(partitions=3)},
    )


def build(database_url: str, bootstrap: str, prefix: str) -> EventSeam:
    """The application on ``database_url`` (tables created)."""
    engine = create_engine(database_url)
    eventseam_metadata.create_all(engine)
    crates.metadata.create_all(engine)
    return EventSeam(
        settings(database_url, bootstrap, prefix),
        [intake, ledger],
        session_factory=sessionmaker(engine),
    )


def bad_input_app() -> EventSeam:
    """Application factory for the worker process."""
    environ = os.environ
    return build(
        environ["BAD_INPUT_DATABASE"], environ["BAD_INPUT_BOOTSTRAP"], environ["BAD_INPUT_PREFIX"]
    )
