"""EventSeam: the facade a host application talks to.

    seam = EventSeam(settings, [orders, payments, shipping], session_factory=Session)
    with seam.transaction() as uow:                 # or seam.publish(your_session, ...)
        uow.session.add(order)
        uow.publish(OrderPlaced(aggregate_id=order.id, ...))
    # committed: the outbox row is in the same transaction; handlers run after the commit

Publish contract (``publish`` / ``publish_async``):

1. The publishing context is ``context=`` (checked: it must own every event), else the running
   handler's context when called from a handler (checked the same way), else the owner of each
   event's type; an unowned type raises OwnershipError.
2. Each event is stamped with ``source`` (and ``traceparent`` when OpenTelemetry is installed and
   a span is active) and encoded; every event is encoded before anything is written, so an
   oversize one raises EventTooLargeError with nothing written.
3. All records go to the outbox with ONE ``outbox.writer`` call on the caller's transaction,
   which is never committed here (OutsideTransactionError without an open transaction). The
   INSERT runs at once. Engines that opt in with the execution option
   ``eventseam_outbox_write="at_commit"`` (psycopg 3 only) get it sent in the same network
   flight as the COMMIT instead; an INSERT that fails then fails the commit (outbox.deferred).
4. Events of contexts whose mode dispatches locally are held until that transaction commits
   (see engine.unit_of_work) and then handed to the bus: ``publish_nowait`` on the bus's loop
   thread; from any other thread through the loop's token, blocking until the bus took them
   (backpressure; a thread running another event loop is blocked too). Handlers' follow-ups
   never wait for room (``publish_nowait`` on the loop): a handler's worker cannot deadlock on
   its own buffer. A rollback, or a rolled-back SAVEPOINT, drops them.

After the commit nothing may raise: when the bus cannot take committed events (not started yet,
closed, its loop gone) the error is logged as ``seam.delivery_failed`` and the events are kept
in ``undelivered``; ``run`` hands them to the bus when it starts and ``redeliver_undelivered``
retries on demand. Their outbox rows are committed as well (status ``local`` or ``pending``).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import structlog
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session, scoped_session

from outbox.writer import WriteStrategy, joined_connection, write, write_async

from .bridge import SyncBridge, default_bridge
from .bus import Bus
from .codec import EncodedEvent, encode
from .contexts import BoundedContext, ContextMap
from .dead_letter_db import SqlDeadLetterStore
from .errors import (
    BusClosedError,
    OwnershipError,
    PersonalDataError,
    SettingsError,
    TransactionError,
    UnknownContextError,
)
from .flags import FlagSource
from .handler_context import current_handler, subscription_for
from .metrics import timed_subscription
from .registry import EventRegistry
from .tracing import current_traceparent, traced_subscription
from .unit_of_work import UnitOfWork, hold_until_commit

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from concurrent.futures import Future

    from anyio.abc import TaskStatus
    from sqlalchemy import Connection
    from sqlalchemy.orm import sessionmaker

    from .crypto_keys import KeyExecutor, SubjectKeys
    from .dead_letters import DeadLetterStore
    from .events import DomainEvent
    from .modes import Mode
    from .runner import ConsumerRunner
    from .settings import EventSeamSettings
    from .types import Middleware

_log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class _Loop:
    """Where the bus runs: the loop's token and thread."""

    token: anyio.lowlevel.EventLoopToken
    thread: int


@dataclass(frozen=True, slots=True)
class Prepared:
    """Events ready to write: records and modes for the outbox, stamped events to dispatch."""

    records: list[EncodedEvent]
    modes: list[Mode]
    local: list[DomainEvent]


class EventSeam:
    """Publishes domain events through the outbox and dispatches them after commit.

    ``publish`` and ``publish_async`` are thread safe (each on its own session or connection).
    Like its Bus, an EventSeam runs once: ``run`` (or ``start_background``), then stop it.
    """

    def __init__(
        self,
        settings: EventSeamSettings,
        contexts: Iterable[BoundedContext],
        *,
        registry: EventRegistry | None = None,
        session_factory: sessionmaker[Session] | None = None,
        bridge: SyncBridge | None = None,
        dead_letters: DeadLetterStore | None = None,
        middlewares: Sequence[Middleware] = (),
        flags: FlagSource | None = None,
        consume: bool | None = None,
    ) -> None:
        self.settings = settings
        self.contexts = ContextMap(contexts)
        _check_settings(settings, self.contexts)
        self.flags = (
            flags
            if flags is not None
            else FlagSource(settings, self.contexts, engine=_bound_engine(session_factory))
        )
        self.registry = (
            registry if registry is not None else EventRegistry(strict=settings.strict_names)
        )
        self.registry.register_all(self.contexts.event_types())
        #: Keys of personal-data fields (engine.personal_data); None when no event has any.
        self.personal_data: SubjectKeys | None = _subject_keys(settings, self.registry)
        self.session_factory = session_factory
        #: Wrap every handler this seam runs, from the bus and from Kafka (engine.runner).
        self.middlewares: tuple[Middleware, ...] = tuple(middlewares)
        self._bridge = bridge
        in_process = [name for name in self.contexts.names() if name not in settings.detached]
        has_inbox = session_factory is not None
        subscriptions = [
            timed_subscription(
                traced_subscription(subscription_for(spec, self, self.middlewares, inbox=has_inbox))
            )
            for spec in self.contexts.handlers(in_process)
        ]
        bound = _bound_engine(session_factory)
        if dead_letters is None and bound is not None:  # persisted: `eventseam dlq` sees them
            dead_letters = SqlDeadLetterStore(bound, self.registry, keys=self.personal_data)
        self.bus = Bus(subscriptions, settings.bus, dead_letters)
        # In-process handlers also consume from Kafka (dual/broker modes; see ``run``).
        self._consumed = [name for name in in_process if self.contexts[name].handlers]
        if consume is None:
            consume = bool(settings.kafka.bootstrap_servers) and has_inbox
        self._consume = consume and bool(self._consumed)
        self.consumer_runner: ConsumerRunner | None = None
        self._consumers_done: anyio.Event | None = None
        self._loop: _Loop | None = None
        self._background: Future[None] | None = None
        self._undelivered: list[DomainEvent] = []
        self._undelivered_lock = threading.Lock()

    @property
    def bridge(self) -> SyncBridge:
        """The bridge sync hosts use (the process-wide one unless given)."""
        if self._bridge is None:
            self._bridge = default_bridge()
        return self._bridge

    @property
    def running(self) -> bool:
        """True while the bus runs and accepts events."""
        return self._loop is not None

    def mode_of(self, context: str) -> Mode:
        """The routing mode of ``context``: flag table > settings > LOCAL (never blocks).

        While the seam runs, the flag table is re-read every ``flag_refresh_seconds``; each
        publish looks the mode up once per event and records it on the outbox row.
        """
        return self.flags.mode_of(context)

    def check_publish(self, context: str, event_type: type[DomainEvent]) -> None:
        """Raise UnknownContextError or OwnershipError unless ``context`` owns ``event_type``."""
        self.contexts[context]  # raises UnknownContextError
        self.contexts.check_publish(context, event_type)

    # -- publishing -----------------------------------------------------------------------

    def publish(
        self,
        target: Session | Connection | scoped_session[Session],
        *events: DomainEvent,
        context: str | None = None,
    ) -> None:
        """Write ``events`` to the outbox in ``target``'s open transaction; dispatch after commit.

        Raises OwnershipError, EventTooLargeError or OutsideTransactionError with nothing written.
        """
        if not events:
            return
        if isinstance(target, scoped_session):
            target = target()
        if self._seals(events):
            prepared = self.prepare(events, context, connection=joined_connection(target))
        else:
            prepared = self.prepare(events, context)
        write(target, prepared.records, prepared.modes, strategy=WriteStrategy.AT_COMMIT)
        if prepared.local:
            hold_until_commit(target, prepared.local, self.deliver_committed)

    async def publish_async(
        self,
        target: AsyncSession | AsyncConnection,
        *events: DomainEvent,
        context: str | None = None,
    ) -> None:
        """``publish`` for an AsyncSession or AsyncConnection (same contract)."""
        if not events:
            return
        if self._seals(events):
            prepared = await target.run_sync(self._prepare_joined, events, context)
        else:
            prepared = self.prepare(events, context)
        await write_async(
            target, prepared.records, prepared.modes, strategy=WriteStrategy.AT_COMMIT
        )
        if prepared.local:
            hold_until_commit(_sync_target(target), prepared.local, self.deliver_committed)

    @contextmanager
    def transaction(self) -> Iterator[UnitOfWork]:
        """A transaction on a new Session from ``session_factory``: commit on exit, else rollback."""
        if self.session_factory is None:
            raise TransactionError(
                "EventSeam.transaction needs a session_factory: EventSeam(..., session_factory=sessionmaker(engine))"
            )
        with self.session_factory() as session, session.begin():
            yield UnitOfWork(session, self.publish)

    def prepare(
        self,
        events: Sequence[DomainEvent],
        context: str | None = None,
        *,
        connection: Connection | KeyExecutor | None = None,
    ) -> Prepared:
        """Check ownership, stamp, seal personal data, encode (size guard), pick each event's
        mode; write nothing but subject keys.

        The first step of every publish path (SQLAlchemy here, Django's cursor in the Django
        integration): raises OwnershipError / EventTooLargeError before anything is written.
        Events with personal-data fields need ``connection``, the publish transaction's SQLAlchemy
        Connection or a KeyExecutor running statements in it (engine.crypto_keys; the Django
        integration passes one over Django's cursor): their subjects' keys are read, or
        created, in that transaction (engine.crypto_events); without it they raise
        PersonalDataError. The records carry only sealed values; ``local`` keeps the plaintext
        objects for in-process handlers (they never leave the process).
        """
        traceparent = current_traceparent()
        prepared = Prepared([], [], [])
        stamped_events: list[DomainEvent] = []
        for event in events:
            source = self._publishing_context(type(event), context)
            mode = self.mode_of(source)
            stamped = event.model_copy(
                update={"source": source, "traceparent": event.traceparent or traceparent}
            )
            stamped_events.append(stamped)
            prepared.modes.append(mode)
            if mode.dispatches_locally:
                prepared.local.append(stamped)
        sealed = self._sealed_data(stamped_events, connection)
        for stamped, data in zip(stamped_events, sealed, strict=True):
            prepared.records.append(
                encode(stamped, max_bytes=self.settings.max_event_bytes, data=data)
            )
        return prepared

    def _seals(self, events: Sequence[DomainEvent]) -> bool:
        """True when some of ``events`` have personal-data fields to seal."""
        return self.personal_data is not None and any(type(e).personal_fields for e in events)

    def _prepare_joined(
        self,
        target: Session | Connection,
        events: Sequence[DomainEvent],
        context: str | None,
    ) -> Prepared:
        """``prepare`` on ``target``'s transaction (the async paths call it through run_sync)."""
        return self.prepare(events, context, connection=joined_connection(target))

    def _sealed_data(
        self, events: Sequence[DomainEvent], connection: Connection | KeyExecutor | None
    ) -> Sequence[dict[str, Any] | None]:
        """Per event, its data with personal fields sealed (subject keys read or created in
        ``connection``'s transaction: a SQLAlchemy Connection, or a KeyExecutor such as the
        Django integration's cursor executor); None for events without any."""
        if not self._seals(events):
            return [None] * len(events)
        if connection is None:
            raise PersonalDataError(
                "events with PersonalData fields are sealed on the publish transaction's "
                "connection: pass prepare(..., connection=) its SQLAlchemy Connection or a "
                "KeyExecutor of it (EventSeam.publish / publish_async and the Django "
                "integration's publish do)",
                event_type=next(e.event_name for e in events if type(e).personal_fields),
            )
        from .crypto_events import seal_events

        assert self.personal_data is not None  # _seals checked it
        return seal_events(self.personal_data, connection, events)

    def _publishing_context(self, event_type: type[DomainEvent], context: str | None) -> str:
        handler = current_handler()
        if context is None and handler is not None:  # a handler publishes for its own context
            context = handler.split(".", 1)[0]
        if context is not None:
            self.check_publish(context, event_type)
            return context
        owner = self.contexts.owner_of(event_type)
        if owner is None:
            raise OwnershipError(None, event_type.event_name, None)
        return owner

    # -- delivery after commit --------------------------------------------------------------

    def deliver_committed(self, events: list[DomainEvent]) -> None:
        """Hand committed events to the bus; never raises (keeps them in ``undelivered``)."""
        try:
            self._hand_over(events)
        except Exception as exc:
            with self._undelivered_lock:
                self._undelivered.extend(events)
            for event in events:  # one line per event, each with its ids
                _log.error(
                    "seam.delivery_failed",
                    event_id=str(event.event_id),
                    event_type=event.event_name,
                    context=event.source,
                    correlation_id=str(event.correlation_id or event.event_id),
                    count=len(events),
                    error=repr(exc),
                    kept="EventSeam.undelivered",
                )

    def _hand_over(self, events: list[DomainEvent]) -> None:
        loop = self._loop
        if loop is None:
            raise BusClosedError(
                "the EventSeam's bus is not running; start it with `await seam.run()` "
                "(TaskGroup.start) or `seam.start_background()`"
            )
        if threading.get_ident() == loop.thread:
            self.bus.publish_nowait(*events)
        elif current_handler() is not None:
            # A handler's follow-ups never wait for buffer room: the worker that would make room
            # may be the one waiting for this handler to return.
            anyio.from_thread.run_sync(self.bus.publish_nowait, *events, token=loop.token)
        else:
            anyio.from_thread.run(self.bus.publish, *events, token=loop.token)

    @property
    def undelivered(self) -> list[DomainEvent]:
        """Committed events the bus could not take yet, oldest first (a snapshot)."""
        with self._undelivered_lock:
            return list(self._undelivered)

    async def redeliver_undelivered(self) -> int:
        """Hand ``undelivered`` events to the running bus (on its loop); return how many."""
        with self._undelivered_lock:
            events, self._undelivered = self._undelivered, []
        try:
            await self.bus.publish(*events)
        except BaseException:
            with self._undelivered_lock:
                self._undelivered[:0] = events
            raise
        return len(events)

    # -- running --------------------------------------------------------------------------

    async def run(
        self, *, consume: bool = True, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the bus (and the flag refresher) until ``aclose``/``stop``; use ``TaskGroup.start``.

        ``consume=False`` runs no consumer runner whatever the settings (operator commands such
        as ``eventseam replay`` run the bus only, for the follow-ups of what they apply).

        With a database (``session_factory``), the flag table is read before the seam accepts
        events: a missing table fails the start with SchemaMissingError (run
        ``eventseam db upgrade``), other database errors with their own.

        With Kafka bootstrap servers and a database (``consume=True`` forces it, ``False``
        turns it off when consumers run elsewhere), the in-process handlers (every context not
        in ``settings.detached``) also consume from Kafka in this process (``consumer_runner``,
        engine.runner.ConsumerRunner), whatever the current modes: ``broker`` contexts' events
        reach them only that way, ``dual`` ones both ways (the inbox applies each once), and
        events relayed before a flip back to ``local`` are still consumed. The runner connects
        in the background: an unreachable broker never delays or fails the start of the bus.
        """
        try:
            # Outside the group, so that their errors are raised as they are: the flag table
            # read, and the runner's own checks (a subscription no context owns...).
            if self.flags.has_engine:
                await self.flags.load()
            runner = self._consumer_runner() if self._consume and consume else None
            async with anyio.create_task_group() as group:
                if self.flags.has_engine:
                    await group.start(self.flags.run)
                await group.start(self._run_bus, group.cancel_scope)
                self._loop = _Loop(anyio.lowlevel.current_token(), threading.get_ident())
                await self.redeliver_undelivered()
                if runner is not None:
                    group.start_soon(self._run_consumers, runner, name="eventseam.seam.consumers")
                task_status.started()
        finally:
            self._loop = None

    def _consumer_runner(self) -> ConsumerRunner | None:
        """The in-process handlers' ConsumerRunner; None (logged) when Kafka's TLS or SASL
        settings cannot work: the bus runs without consumers then."""
        from outbox.errors import KafkaSecurityError

        from .runner import ConsumerRunner  # imports aiokafka: only when Kafka is configured

        try:
            return ConsumerRunner(self, self._consumed)
        except KafkaSecurityError as exc:
            _log.error("seam.consumers_failed", error=str(exc))
            return None

    async def _run_consumers(self, runner: ConsumerRunner) -> None:
        """Run ``runner`` until ``aclose`` stops it."""
        from outbox.errors import KafkaSecurityError
        from outbox.kafka_security import first_security_error

        self._consumers_done = done = anyio.Event()
        try:
            self.consumer_runner = runner
            await runner.run()
        except* KafkaSecurityError as errors:  # unusable TLS/SASL: the bus keeps running
            _log.error("seam.consumers_failed", error=str(first_security_error(errors)))
        finally:
            done.set()

    async def _run_bus(
        self, scope: anyio.CancelScope, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the bus; once it stopped, stop its siblings (the flag refresher) too."""
        await self.bus.run(task_status=task_status)
        scope.cancel()

    async def join(self) -> None:
        """Return when every event handed to the bus so far was handled or dead-lettered."""
        await self.bus.join()

    async def aclose(self) -> None:
        """Stop the consumer runner (records in hand finish, offsets are committed), then the
        bus: drain (up to ``bus.drain_timeout``), then stop its workers."""
        runner, done = self.consumer_runner, self._consumers_done
        if runner is not None and done is not None:
            runner.stop()
            await done.wait()
        await self.bus.aclose()

    def start_background(self) -> None:
        """Sync hosts: run the bus inside the bridge's portal; returns once it accepts events.

        Call it in each worker process after the server forked, never in a pre-fork master.
        """
        if self._background is not None:
            raise BusClosedError("this EventSeam was already started; an EventSeam runs once")
        self._background, _ = self.bridge.start_task(self.run, name="eventseam.seam")

    def stop(self) -> None:
        """Sync hosts: close the bus started by ``start_background`` (drains) and wait for it."""
        future, self._background = self._background, None
        if future is None or future.done():
            return
        self.bridge.call(self.aclose)
        future.result()


def _subject_keys(settings: EventSeamSettings, registry: EventRegistry) -> SubjectKeys | None:
    """The key table's view when a registered event has personal-data fields, else None.

    Raises MasterKeyError when such events exist but no master key is configured.
    """
    if not any(event_type.personal_fields for event_type in registry.events()):
        return None
    from .crypto_keys import SubjectKeys  # imports cryptography: only when needed

    return SubjectKeys.from_settings(settings.personal_data)


def _bound_engine(session_factory: sessionmaker[Session] | None) -> Engine | None:
    """The Engine a sessionmaker is bound to, if any (the flag table is read through it)."""
    bind = session_factory.kw.get("bind") if session_factory is not None else None
    return bind if isinstance(bind, Engine) else None


def _sync_target(target: AsyncSession | AsyncConnection) -> Session | Connection:
    if isinstance(target, AsyncSession):
        return target.sync_session
    if target.sync_connection is None:
        raise TransactionError("the AsyncConnection is not connected")
    return target.sync_connection


def _check_settings(settings: EventSeamSettings, contexts: ContextMap) -> None:
    """Raise SettingsError when per-context settings name a context that does not exist."""
    for section in ("contexts", "topics", "detached"):
        unknown = sorted(set(getattr(settings, section)) - set(contexts.names()))
        if unknown:
            raise SettingsError(
                f"settings.{section} names unknown context(s) {', '.join(map(repr, unknown))}; "
                f"known contexts: {', '.join(contexts.names()) or 'none'}"
            ) from UnknownContextError(unknown[0], contexts.names())
