"""What an operator asks first: per context, its mode, outbox backlog, parked rows, dead letters, lag.

    status = await collect_status(seam)            # seam: the application's EventSeam
    print(status.to_dict())                        # what `eventseam status --json` prints

Sources, each read once per call:

* Database (the seam's engine, or ``database_url``): the flag table (each context's mode and its
  origin) and one GROUP BY over the outbox (``outbox_figures``): pending rows, the age of the
  oldest pending row (``created_at``), parked rows, per context.
* Kafka, when bootstrap servers are set (``offsets`` replaces it in tests): for every handler,
  its consumer group (``ConsumerSettings.group_prefix`` + durable name), the topics it reads
  (outbox.topics naming) and its dead-letter topic(s). Lag per partition is the high watermark
  minus the group's committed offset; a partition the group never committed counts from the
  log start with ``auto_offset_reset = "earliest"``, else 0. Dead letters are the records of the
  dead-letter topics (high watermark minus log start). High watermarks come from a fetch
  response (a consumer's ``highwater()`` after one fetch from the log start), never from
  ``end_offsets``: the bundled broker answers ListOffsets(latest) wrongly after multi-record
  batches (measured: 14 for a partition holding 18 records). Committed offsets come from
  OffsetFetch by a consumer of that group that never joins it, so status never moves a group.
* Relays (the same database pass, own queries): the relay processes whose membership has not
  expired (outbox.lease_table, the database clock), the slots each holds an unexpired lease on,
  and how many of the leased slots no live relay holds.
* Bus dead letters (in-process handlers that failed every attempt): while the seam runs in this
  process, its store's count; otherwise the rows of ``eventseam_dead_letter`` per handler (where
  a seam bound to a database stores them), read in the database pass (``None`` when that table
  cannot be read, e.g. before ``eventseam db upgrade``).

A source that fails leaves its figures ``None`` and adds a line to ``Status.errors``; the others
are still reported. aiokafka is imported only when Kafka is read (like engine.consumer).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

import anyio
import anyio.to_thread
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from outbox.dead_letter_table import dead_letter
from outbox.lease_table import relay_lease, relay_member
from outbox.leases import epoch_now
from outbox.table import Status as RowStatus
from outbox.table import outbox
from outbox.topics import TopicNamer

from .dead_letter_topic import DeadLetterTopics
from .errors import ConsumeError, database_error_line, error_line

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from sqlalchemy import Connection
    from sqlalchemy.orm import Session, sessionmaker

    from .bus import Bus
    from .contexts import ContextMap, HandlerSpec
    from .flags import FlagSource, FlagState
    from .settings import EventSeamSettings

Partition = tuple[str, int]
"""A topic partition as ``(topic, partition)``."""

SCHEMA_VERSION: Final = 2  # 2: in_memory_dead_letters became bus_dead_letters
"""``version`` in ``Status.to_dict()``; bumped when a field changes meaning or disappears."""


class StatusHost(Protocol):
    """What status reads from the application (EventSeam implements it)."""

    settings: EventSeamSettings
    contexts: ContextMap
    flags: FlagSource
    session_factory: sessionmaker[Session] | None

    @property
    def running(self) -> bool: ...


class BrokerOffsets(Protocol):
    """Reads offsets from Kafka (KafkaOffsets, or a fake). Raises ConsumeError when it cannot."""

    async def watermarks(self, topics: Sequence[str]) -> dict[Partition, tuple[int, int]]:
        """(log start, high watermark) of every partition of the ``topics`` that exist."""
        ...

    async def committed(self, group: str, partitions: Sequence[Partition]) -> dict[Partition, int]:
        """Offsets ``group`` committed for ``partitions`` (absent: never committed)."""
        ...


@dataclass(frozen=True, slots=True)
class OutboxFigures:
    """One context's outbox: pending rows, the oldest one's age in seconds, parked rows."""

    backlog: int = 0
    oldest_pending_age_seconds: float | None = None
    parked: int = 0


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One partition a handler reads: committed offset (None: never), high watermark, lag."""

    topic: str
    partition: int
    committed: int | None
    high_watermark: int
    lag: int


@dataclass(frozen=True, slots=True)
class HandlerStatus:
    """One handler: its consumer group's lag and its dead letters (None: not read)."""

    name: str
    context: str
    group: str
    topics: list[str]
    lag: int | None = None
    partitions: list[PartitionLag] = field(default_factory=list)
    dead_letter_topics: list[str] = field(default_factory=list)
    dead_letters: int | None = None
    bus_dead_letters: int | None = None


@dataclass(frozen=True, slots=True)
class ContextStatus:
    """One context: mode and origin, outbox figures, dead letters (sums of its handlers)."""

    name: str
    mode: str | None
    mode_origin: str | None
    known: bool = True
    backlog: int | None = None
    oldest_pending_age_seconds: float | None = None
    parked: int | None = None
    dead_letters: int | None = None
    bus_dead_letters: int | None = None
    handlers: list[HandlerStatus] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RelayStatus:
    """A live relay process: its id, the slots it holds, seconds until its membership lapses."""

    owner: str
    slots: int
    expires_in_seconds: float


@dataclass(frozen=True, slots=True)
class RelayFigures:
    """The relay processes sharing this outbox: ``slots`` leased in all (0 before any relay
    ran), ``free`` of them held by no live relay, and each live relay."""

    slots: int
    free: int
    relays: list[RelayStatus]


@dataclass(frozen=True, slots=True)
class Status:
    """Everything ``eventseam status`` shows; ``errors`` lists the sources that failed."""

    generated_at: datetime
    database: str
    kafka: str | None
    contexts: list[ContextStatus]
    errors: list[str] = field(default_factory=list)
    #: None when the lease tables could not be read.
    relays: RelayFigures | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the ``--json`` schema: ``version``, then the fields, times in RFC 3339)."""
        data = asdict(self)
        data["generated_at"] = self.generated_at.isoformat()
        return {"version": SCHEMA_VERSION, **data}


# -- database -------------------------------------------------------------------------------


def outbox_figures(connection: Connection, now: datetime | None = None) -> dict[str, OutboxFigures]:
    """Pending and parked rows per context, and the oldest pending row's age: ONE query."""
    now = now or datetime.now(UTC)
    query = (
        select(
            outbox.c.aggregatetype,
            outbox.c.status,
            func.count(),
            func.min(outbox.c.created_at),
        )
        .where(outbox.c.status.in_([RowStatus.PENDING, RowStatus.PARKED]))
        .group_by(outbox.c.aggregatetype, outbox.c.status)
    )
    found: dict[str, dict[str, Any]] = {}
    for context, status, count, oldest in connection.execute(query):
        values = found.setdefault(context, {})
        if status == RowStatus.PARKED:
            values["parked"] = int(count)
        else:
            values["backlog"] = int(count)
            values["oldest_pending_age_seconds"] = _age(oldest, now)
    return {context: OutboxFigures(**values) for context, values in sorted(found.items())}


def relay_figures(connection: Connection) -> RelayFigures:
    """Live relays (membership unexpired by the database clock) and their unexpired slots."""
    now = epoch_now()
    members = select(relay_member.c.owner, relay_member.c.expires_at - now).where(
        relay_member.c.expires_at > now
    )
    live = {owner: float(left) for owner, left in connection.execute(members)}
    held_query = (
        select(relay_lease.c.owner, func.count())
        .where(relay_lease.c.owner.is_not(None), relay_lease.c.expires_at > now)
        .group_by(relay_lease.c.owner)
    )
    held = {owner: int(count) for owner, count in connection.execute(held_query)}
    slots = int(connection.execute(select(func.count()).select_from(relay_lease)).scalar_one())
    relays = [
        RelayStatus(owner, held.get(owner, 0), round(max(0.0, left), 1))
        for owner, left in sorted(live.items())
    ]
    return RelayFigures(slots, slots - sum(relay.slots for relay in relays), relays)


def read_outbox_figures(engine: Engine) -> dict[str, OutboxFigures]:
    """``outbox_figures`` on a new connection of ``engine`` (blocking)."""
    with engine.connect() as connection:
        return outbox_figures(connection)


def _age(oldest: datetime | None, now: datetime) -> float | None:
    if oldest is None:
        return None
    if oldest.tzinfo is None:  # SQLite keeps UTC without a zone
        oldest = oldest.replace(tzinfo=UTC)
    return max(0.0, round((now - oldest).total_seconds(), 3))


@dataclass(slots=True)
class _DatabaseView:
    states: list[FlagState] | None = None
    figures: dict[str, OutboxFigures] | None = None
    bus_letters: dict[str, int] | None = None
    relays: RelayFigures | None = None
    errors: list[str] = field(default_factory=list)


def _read_database(host: StatusHost, engine: Engine) -> _DatabaseView:
    view = _DatabaseView()
    try:
        with engine.connect() as connection:
            host.flags.refresh(connection, force=True)
            view.states = host.flags.states()
            view.figures = outbox_figures(connection)
    except SQLAlchemyError as exc:
        view.errors.append(_failed("database", exc))
        return view
    try:  # its own pass: a database without the dead-letter table still shows the rest
        with engine.connect() as connection:
            view.bus_letters = stored_dead_letters(connection)
    except SQLAlchemyError as exc:
        view.errors.append(_failed("dead letters", exc))
    try:  # likewise for the relays' lease tables
        with engine.connect() as connection:
            view.relays = relay_figures(connection)
    except SQLAlchemyError as exc:
        view.errors.append(_failed("relays", exc))
    return view


def _failed(source: str, exc: Exception) -> str:
    """What ``Status.errors`` says about a source that could not be read: one line."""
    return f"{source}: {database_error_line(exc)}"


def stored_dead_letters(connection: Connection) -> dict[str, int]:
    """Bus dead letters stored in ``eventseam_dead_letter``, per handler: ONE query."""
    query = select(dead_letter.c.handler, func.count()).group_by(dead_letter.c.handler)
    return {handler: int(count) for handler, count in connection.execute(query)}


# -- Kafka ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    """Where one handler's figures are read on Kafka."""

    spec: HandlerSpec
    group: str
    topics: list[str]
    dead_letter_topics: list[str]


def _plans(host: StatusHost) -> list[_Plan]:
    settings = host.settings
    namer = TopicNamer(settings.relay)
    dlq = DeadLetterTopics(settings.consumer.dlq_topic_template, settings.relay.topic_prefix)
    plans = []
    for spec in host.contexts.handlers():
        topics = sorted(
            {
                namer(owner, event_type.event_name)
                for event_type in spec.event_types
                if (owner := host.contexts.owner_of(event_type)) is not None
            }
        )
        letters = sorted({dlq(spec.name, spec.context, topic) for topic in topics})
        group = settings.consumer.group_id(spec.name)
        plans.append(_Plan(spec, group, topics, letters))
    return plans


@dataclass(slots=True)
class _KafkaView:
    watermarks: dict[Partition, tuple[int, int]] = field(default_factory=dict)
    committed: dict[str, dict[Partition, int]] = field(default_factory=dict)
    error: str | None = None


async def _read_kafka(plans: list[_Plan], offsets: BrokerOffsets, wait: float) -> _KafkaView:
    view = _KafkaView()
    topics = sorted({t for plan in plans for t in (*plan.topics, *plan.dead_letter_topics)})
    try:
        with anyio.fail_after(wait):
            view.watermarks = await offsets.watermarks(topics)
            for plan in plans:
                read = [p for p in view.watermarks if p[0] in plan.topics]
                view.committed[plan.group] = await offsets.committed(plan.group, read)
    except ConsumeError as exc:
        view.error = f"kafka: {exc.reason}"
    except TimeoutError:
        view.error = f"kafka: no answer within {wait:g} s"
    return view


class KafkaOffsets:
    """BrokerOffsets on aiokafka for ``settings.kafka`` (see the module docstring)."""

    def __init__(self, settings: EventSeamSettings) -> None:
        from outbox.kafka import security_options

        kafka = settings.kafka
        self._options: dict[str, Any] = {
            "bootstrap_servers": kafka.bootstrap_servers,
            "client_id": f"{kafka.client_id}-status",
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "fetch_max_wait_ms": 10,
            "max_partition_fetch_bytes": 1024,
            "request_timeout_ms": kafka.request_timeout_ms,
        } | security_options(kafka)

    async def watermarks(self, topics: Sequence[str]) -> dict[Partition, tuple[int, int]]:
        """Log start (ListOffsets earliest) and high watermark (one fetch) per partition."""
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka import errors as kafka_errors

        from outbox.kafka import forbid_auto_create

        consumer = AIOKafkaConsumer(**self._options)
        forbid_auto_create(consumer._client)  # never create a topic by asking about it
        try:
            await consumer.start()
            existing = await consumer.topics()
            chosen = [
                TopicPartition(topic, number)
                for topic in topics
                if topic in existing
                for number in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            if not chosen:
                return {}
            starts = await consumer.beginning_offsets(chosen)
            consumer.assign(chosen)
            for tp in chosen:
                consumer.seek(tp, starts[tp])
            highs: dict[Any, int | None] = dict.fromkeys(chosen)
            while any(value is None for value in highs.values()):
                await consumer.getmany(timeout_ms=50, max_records=1)
                highs = {tp: consumer.highwater(tp) for tp in chosen}
            return {
                (tp.topic, tp.partition): (int(starts[tp]), int(highs[tp] or 0)) for tp in chosen
            }
        except (kafka_errors.KafkaError, OSError) as exc:
            raise ConsumeError("status", error_line(exc)) from exc
        finally:
            await consumer.stop()

    async def committed(self, group: str, partitions: Sequence[Partition]) -> dict[Partition, int]:
        """OffsetFetch by a member of ``group`` that never subscribes (the group is not touched)."""
        if not partitions:
            return {}
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka import errors as kafka_errors

        consumer = AIOKafkaConsumer(group_id=group, **self._options)
        try:
            await consumer.start()
            found = {}
            for topic, number in partitions:
                offset = await consumer.committed(TopicPartition(topic, number))
                if offset is not None:
                    found[(topic, number)] = int(offset)
            return found
        except (kafka_errors.KafkaError, OSError) as exc:
            raise ConsumeError(group, error_line(exc)) from exc
        finally:
            await consumer.stop()


# -- assembling -----------------------------------------------------------------------------


async def collect_status(
    host: StatusHost,
    *,
    database_url: str | None = None,
    kafka: bool = True,
    offsets: BrokerOffsets | None = None,
    kafka_wait: float = 10.0,
) -> Status:
    """The status of every context of ``host`` (see the module docstring). Never raises for a
    source that fails: its figures stay None and ``errors`` says why.

    ``database_url`` replaces the seam's engine; ``kafka=False`` skips the broker; ``kafka_wait``
    bounds the broker reads (seconds).
    """
    engine, own = _engine(host, database_url)
    try:
        database = await anyio.to_thread.run_sync(_read_database, host, engine)
    finally:
        if own:
            engine.dispose()
    plans = _plans(host)
    servers = host.settings.kafka.bootstrap_servers
    broker: _KafkaView | None = None
    if kafka and (servers or offsets is not None):
        broker = await _read_kafka(plans, offsets or KafkaOffsets(host.settings), kafka_wait)
    errors = [*database.errors, *([broker.error] if broker and broker.error else [])]
    handlers = [_handler_status(host, plan, broker, database) for plan in plans]
    return Status(
        generated_at=datetime.now(UTC),
        database=engine.url.render_as_string(hide_password=True),
        kafka=servers if kafka else None,
        contexts=_contexts(host, database, handlers),
        errors=errors,
        relays=database.relays,
    )


def _engine(host: StatusHost, database_url: str | None) -> tuple[Engine, bool]:
    """The engine to read: ``database_url``'s (disposed after), else the seam's, else settings'."""
    if database_url is None:
        factory = host.session_factory
        bind = factory.kw.get("bind") if factory is not None else None
        if isinstance(bind, Engine):
            return bind, False
        database_url = host.settings.database_url
    return create_engine(make_url(database_url)), True


def _handler_status(
    host: StatusHost, plan: _Plan, broker: _KafkaView | None, database: _DatabaseView
) -> HandlerStatus:
    bus_letters = _bus_dead_letters(host, plan.spec.name, database)
    if broker is None or broker.error is not None:
        return HandlerStatus(
            plan.spec.name,
            plan.spec.context,
            plan.group,
            plan.topics,
            dead_letter_topics=plan.dead_letter_topics,
            bus_dead_letters=bus_letters,
        )
    earliest = host.settings.consumer.auto_offset_reset == "earliest"
    committed = broker.committed.get(plan.group, {})
    partitions = []
    for (topic, number), (start, high) in sorted(broker.watermarks.items()):
        if topic not in plan.topics:
            continue
        offset = committed.get((topic, number))
        base = offset if offset is not None else (start if earliest else high)
        partitions.append(PartitionLag(topic, number, offset, high, max(0, high - base)))
    letters = sum(
        high - start
        for (topic, _), (start, high) in broker.watermarks.items()
        if topic in plan.dead_letter_topics
    )
    return HandlerStatus(
        plan.spec.name,
        plan.spec.context,
        plan.group,
        plan.topics,
        lag=sum(p.lag for p in partitions),
        partitions=partitions,
        dead_letter_topics=plan.dead_letter_topics,
        dead_letters=letters,
        bus_dead_letters=bus_letters,
    )


def _bus_dead_letters(host: StatusHost, handler: str, database: _DatabaseView) -> int | None:
    """``handler``'s bus dead letters: the running bus's store, else the table (None: unread)."""
    bus: Bus | None = getattr(host, "bus", None)
    if bus is not None and host.running:
        return bus.dead_letters.count(handler=handler)
    if database.bus_letters is None:
        return None
    return database.bus_letters.get(handler, 0)


def _contexts(
    host: StatusHost, database: _DatabaseView, handlers: list[HandlerStatus]
) -> list[ContextStatus]:
    states = {state.context: state for state in database.states or []}
    figures = database.figures
    names = list(host.contexts.names())
    names += sorted((set(states) | set(figures or {})) - set(names))
    result = []
    for name in names:
        state = states.get(name)
        mine = [handler for handler in handlers if handler.context == name]
        figure = figures.get(name, OutboxFigures()) if figures is not None else None
        result.append(
            ContextStatus(
                name=name,
                mode=state.mode.value if state else None,
                mode_origin=state.origin.value if state else None,
                known=name in host.contexts and (state is None or state.known),
                backlog=figure.backlog if figure else None,
                oldest_pending_age_seconds=figure.oldest_pending_age_seconds if figure else None,
                parked=figure.parked if figure else None,
                dead_letters=_total(h.dead_letters for h in mine),
                bus_dead_letters=_total(h.bus_dead_letters for h in mine),
                handlers=mine,
            )
        )
    return result


def _total(values: Iterable[int | None]) -> int | None:
    """Sum of ``values``; None when one of them is None (not read), 0 for none at all."""
    items = list(values)
    if any(value is None for value in items):
        return None
    return sum(value or 0 for value in items)
