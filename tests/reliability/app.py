"""The application the reliability scenarios run: ``stream`` publishes Ticked, ``sink`` applies it.

``sink.apply_tick`` writes one ``reliability_applied`` row (event id, aggregate, per-aggregate
sequence number) per application, in the runner's transaction together with its inbox row, so
the table is the consumer's applied log: an event applied twice shows as two rows. A Ticked with
``poison=True`` makes it raise on every attempt; each attempt appends a line to the file named
by ``RELIABILITY_ATTEMPTS`` (when set), which survives the worker's SIGKILL.

``worker_app`` is the factory a worker subprocess loads (``--app``); it reads RELIABILITY_*
variables (``worker_environment`` builds them).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, create_engine
from sqlalchemy.orm import sessionmaker

from engine.contexts import BoundedContext
from engine.events import DomainEvent
from engine.modes import Mode
from engine.seam import EventSeam
from engine.settings import EventSeamSettings, KafkaSettings, RelaySettings, TopicSettings
from outbox.notify import install_notify_trigger
from outbox.table import metadata as eventseam_metadata
from tests.broker.runner_conftest import consumer_settings

if TYPE_CHECKING:
    from engine.handler_context import HandlerContext

PARTITIONS = 3
HANDLER = "sink.apply_tick"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Ticked(DomainEvent, name="tests.reliability.Ticked", version=1):
    """The ``seq``-th event of its aggregate (1, 2, 3...)."""

    seq: int
    poison: bool = False


class TickRejectedError(RuntimeError):
    """Raised by apply_tick for a poison event, on every attempt."""


applied = Table(
    "reliability_applied",
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("handler", String(200), nullable=False),
    Column("event_id", String(40), nullable=False),
    Column("aggregate", String(100), nullable=False),
    Column("seq", Integer, nullable=False),
)

stream = BoundedContext("stream", owns=[Ticked])
sink = BoundedContext("sink")


@sink.handler(Ticked, name="apply_tick")
def apply_tick(event: Ticked, ctx: HandlerContext) -> None:
    """Append the event to the applied log, in the handler's transaction (poison: raise)."""
    if event.poison:
        attempts = os.environ.get("RELIABILITY_ATTEMPTS")
        if attempts:
            with open(attempts, "a") as log:
                log.write(f"{event.event_id} {os.getpid()}\n")
        raise TickRejectedError(f"tick {event.aggregate_id}#{event.seq} is poison")
    ctx.session.execute(
        applied.insert().values(
            handler=ctx.handler_name,
            event_id=str(event.event_id),
            aggregate=event.aggregate_id,
            seq=event.seq,
        )
    )


def tick(aggregate: str, seq: int, *, poison: bool = False) -> Ticked:
    """A Ticked of ``aggregate`` published by ``stream`` (source stamped as the engine would)."""
    return Ticked(aggregate_id=aggregate, seq=seq, poison=poison, source="stream")


def create_database(url: str) -> Engine:
    """A sync engine on ``url`` with the eventseam tables, the NOTIFY trigger and the applied log."""
    engine = create_engine(url)
    eventseam_metadata.create_all(engine)
    install_notify_trigger(engine)
    applied.metadata.create_all(engine)
    return engine


def app_settings(
    database_url: str,
    bootstrap: str,
    prefix: str,
    *,
    stream_mode: Mode = Mode.BROKER,
    max_attempts: int = 3,
    **extra: Any,
) -> EventSeamSettings:
    """Settings of the application: its own topics (prefix), quick consumers, fast relay."""
    return EventSeamSettings(
        database_url=database_url,
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap, enable_idempotence="off", request_timeout_ms=5000
        ),
        relay=RelaySettings(
            topic_prefix=prefix, poll_interval=0.05, lease_seconds=2.0, backoff_max=0.5
        ),
        consumer=consumer_settings(prefix, max_attempts=max_attempts, session_timeout_ms=3000),
        contexts={"stream": stream_mode},
        topics={"stream": TopicSettings(partitions=PARTITIONS)},
        **extra,
    )


def build_app(settings: EventSeamSettings) -> EventSeam:
    """The application on ``settings.database_url`` (tables created)."""
    engine = create_database(settings.database_url)
    return EventSeam(settings, [stream, sink], session_factory=sessionmaker(engine))


def worker_app() -> EventSeam:
    """Application factory of worker subprocesses (RELIABILITY_DATABASE/_BOOTSTRAP/_PREFIX...)."""
    environ = os.environ
    settings = app_settings(
        environ["RELIABILITY_DATABASE"],
        environ["RELIABILITY_BOOTSTRAP"],
        environ["RELIABILITY_PREFIX"],
        max_attempts=int(environ.get("RELIABILITY_MAX_ATTEMPTS", "3")),
    )
    return build_app(settings)


def worker_environment(
    database_url: str, bootstrap: str, prefix: str, **extra: str
) -> dict[str, str]:
    """Environment of a worker subprocess running ``worker_app`` (no EVENTSEAM_* leaks in)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("EVENTSEAM_")}
    env.update(
        {
            "RELIABILITY_DATABASE": database_url,
            "RELIABILITY_BOOTSTRAP": bootstrap,
            "RELIABILITY_PREFIX": prefix,
            "PYTHONPATH": REPO_ROOT,
            "PYTHONFAULTHANDLER": "1",
            **extra,
        }
    )
    return env
