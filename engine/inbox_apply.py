"""The thread side of the consumer runner: one handler's events applied with the inbox.

engine.handler_worker hands decoded events to an InboxApplier in worker threads (blocking
database I/O). ``apply_batch`` applies the events not in the inbox and records them in one
transaction; ``apply_one`` claims one event and applies it in its own transaction (the
one-by-one fallback after a failed batch). See engine.runner for the whole contract.
"""

from __future__ import annotations

import contextvars
import functools
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.from_thread
from sqlalchemy.exc import SQLAlchemyError
from structlog.contextvars import bind_contextvars

from . import inbox, metrics
from .errors import EngineError, MasterKeyError, SettingsError
from .handler_context import HandlerContext, handling, wrapped_in
from .tracing import ConsumerSpans
from .unit_of_work import UnitOfWork

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Sequence
    from contextlib import AbstractContextManager

    from sqlalchemy import Connection
    from sqlalchemy.orm import Session, sessionmaker

    from .consumer import Record
    from .contexts import ContextMap, HandlerSpec
    from .crypto_keys import SubjectKeys
    from .events import DomainEvent
    from .registry import EventRegistry
    from .settings import EventSeamSettings
    from .types import Middleware


class RunnerHost(Protocol):
    """What the consumer runner and its appliers need from the application (EventSeam)."""

    settings: EventSeamSettings
    contexts: ContextMap
    registry: EventRegistry
    session_factory: sessionmaker[Session] | None

    @property
    def middlewares(self) -> Sequence[Middleware]:
        """Wrap every handler call (engine.runner's contract)."""
        ...

    def publish(
        self, target: Session, /, *events: DomainEvent, context: str | None = None
    ) -> None: ...

    def check_publish(self, context: str, event_type: type[DomainEvent]) -> None: ...


class InboxUnavailableError(EngineError):
    """The inbox claim failed before the handler ran: not the event's fault, not an attempt."""

    retriable = True


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """One batch transaction: how many events were applied, or the error and where it happened."""

    applied: int = 0
    error: Exception | None = None
    index: int | None = None


class _RunnerTransactionHost:
    """HandlerHost whose ``transaction()`` is the transaction the runner holds open."""

    __slots__ = ("_seam", "_unit")

    def __init__(self, seam: RunnerHost, unit: UnitOfWork) -> None:
        self._seam, self._unit = seam, unit

    def transaction(self) -> AbstractContextManager[UnitOfWork]:
        return nullcontext(self._unit)

    def check_publish(self, context: str, event_type: type[DomainEvent]) -> None:
        self._seam.check_publish(context, event_type)


async def _await(function: Callable[..., Any], *args: object) -> None:
    await function(*args)


def _event_log_vars() -> tuple[contextvars.ContextVar[Any], ...]:
    """The context variables behind structlog's ``event_id``, ``event_type``, ``correlation_id``.

    ``bind_contextvars`` (in a throwaway context) creates or finds them and returns their tokens;
    setting them directly binds the same keys for ``merge_contextvars`` at a quarter of the cost
    of a ``bind_contextvars`` call per event.
    """
    tokens = contextvars.Context().run(
        bind_contextvars, event_id=..., event_type=..., correlation_id=...
    )
    return tuple(token.var for token in tokens.values())


_EVENT_ID, _EVENT_TYPE, _CORRELATION_ID = _event_log_vars()

#: The handler call in hand while the middlewares run (InboxApplier._through_middlewares).
_HANDLER_CALL: contextvars.ContextVar[Callable[[], None]] = contextvars.ContextVar(
    "eventseam_handler_call"
)


class InboxApplier:
    """Applies one handler's events with the inbox. Runs in worker threads (blocking DB I/O)."""

    def __init__(
        self,
        spec: HandlerSpec,
        seam: RunnerHost,
        sqlite_lock: threading.Lock,
        *,
        group: str | None = None,
    ) -> None:
        if seam.session_factory is None:
            raise SettingsError(
                "the consumer runner needs EventSeam(session_factory=...) for its inbox"
            )
        self.spec, self._seam, self._sessions = spec, seam, seam.session_factory
        self._sqlite_lock = sqlite_lock
        # EventSeam.personal_data: opens sealed personal-data fields (None: no event has any).
        self._keys: SubjectKeys | None = getattr(seam, "personal_data", None)
        self._observe = metrics.handler_batch_observer(spec.name, metrics.KAFKA)
        # The seam's middlewares around the handler call (None without any: no loop round trip).
        middlewares = seam.middlewares
        self._through = wrapped_in(middlewares, self._in_own_thread) if middlewares else None
        self._limiter: anyio.CapacityLimiter | None = None
        # ``process <topic>`` spans of consumer group ``group`` (None: tracing is off).
        self._spans = ConsumerSpans.for_handler(spec.name, group)

    def apply_batch(
        self, events: Sequence[DomainEvent], records: Sequence[Record] = ()
    ) -> BatchOutcome:
        """Claim the events not in the inbox and apply them, in order: one transaction.

        The inbox rows are inserted first (``inbox.claim_many``: one statement on PostgreSQL),
        then the handler runs for each claimed event; any failure rolls both back.
        ``records`` (the fetched records of ``events``, same positions) name the spans' topics.
        The log ids bound meanwhile stay inside the call (a copy of the caller's context).
        """
        return contextvars.copy_context().run(self._apply_batch, events, records)

    def apply_one(self, event: DomainEvent, attempt: int, record: Record | None = None) -> bool:
        """Claim the event and apply it in one transaction; False when it was applied before.

        Like ``apply_batch``, it runs in a copy of the caller's context.
        """
        return contextvars.copy_context().run(self._apply_one, event, attempt, record)

    def _apply_batch(
        self, events: Sequence[DomainEvent], records: Sequence[Record]
    ) -> BatchOutcome:
        handling(self.spec.name)
        bind_contextvars(handler=self.spec.name, context=self.spec.context, attempt=1)
        index: int | None = None
        applied = 0
        durations: list[float] = []  # of the handler calls, observed together at the end
        try:
            with self._sessions() as session, self._exclusive(session), session.begin():
                host = _RunnerTransactionHost(self._seam, UnitOfWork(session, self._seam.publish))
                new = inbox.claim_many(session, self.spec.name, events)
                events = self._opened(session, events)  # same positions (outcome.index)
                every = len(new) == len(events)  # all claimed, none repeated: no id lookups
                for position, event in enumerate(events):
                    if every or event.event_id in new:
                        if not every:
                            new.discard(event.event_id)  # a duplicate inside the batch runs once
                        index = position
                        record = records[position] if records else None
                        self._invoke(event, 1, host, session, durations, record)
                        applied += 1
                index = None
        except Exception as exc:
            return BatchOutcome(error=exc, index=index)
        finally:
            self._observe(durations)
        return BatchOutcome(applied=applied)

    def _apply_one(self, event: DomainEvent, attempt: int, record: Record | None) -> bool:
        handling(self.spec.name)
        bind_contextvars(handler=self.spec.name, context=self.spec.context, attempt=attempt)
        with self._sessions() as session, self._exclusive(session), session.begin():
            try:
                claimed = inbox.claim(
                    session, self.spec.name, event.event_id, event.event_name, context=event.source
                )
            except SQLAlchemyError as exc:
                raise InboxUnavailableError(f"inbox claim failed: {exc}") from exc
            if claimed:
                try:
                    (event,) = self._opened(session, [event])
                except (MasterKeyError, SQLAlchemyError) as exc:
                    raise InboxUnavailableError(f"personal-data keys unusable: {exc}") from exc
                host = _RunnerTransactionHost(self._seam, UnitOfWork(session, self._seam.publish))
                durations: list[float] = []
                try:
                    self._invoke(event, attempt, host, session, durations, record)
                finally:
                    self._observe(durations)
        return claimed

    def run_exclusive(self, action: Callable[[Connection], object]) -> object:
        """Run ``action`` in a transaction of its own, committed on return (serialized on SQLite).

        The dead-letter marks (engine.dead_letter_marks) go through here.
        """
        with self._sessions() as session, self._exclusive(session), session.begin():
            return action(session.connection())

    def _opened(self, session: Session, events: Sequence[DomainEvent]) -> Sequence[DomainEvent]:
        """``events`` with sealed personal-data fields opened (or ``Erased``), in this transaction.

        Events without personal-data fields pass through untouched (engine.crypto_events).
        """
        if self._keys is None or not any(type(e).personal_fields for e in events):
            return events
        from .crypto_events import open_events

        return open_events(self._keys, session.connection(), events)

    def _exclusive(self, session: Session) -> AbstractContextManager[Any]:
        """SQLite has one writer: serialize this process's runner transactions on it.

        Without it a batch's read transaction fails with SQLITE_BUSY when it starts writing
        after another thread committed (WAL snapshot), and every batch falls back to one by one.
        """
        return self._sqlite_lock if session.get_bind().dialect.name == "sqlite" else nullcontext()

    def _invoke(
        self,
        event: DomainEvent,
        attempt: int,
        host: _RunnerTransactionHost,
        session: Session,
        durations: list[float],
        record: Record | None = None,
    ) -> None:
        """``_call`` in its span; its duration is appended to ``durations``, failures included
        (the caller observes them: eventseam_handler_duration_seconds)."""
        start = time.perf_counter()
        try:
            if self._spans is None:
                self._call(event, attempt, host, session)
            else:
                with self._spans.processing(event, record, attempt):
                    self._call(event, attempt, host, session)
        finally:
            durations.append(time.perf_counter() - start)

    def _call(
        self, event: DomainEvent, attempt: int, host: _RunnerTransactionHost, session: Session
    ) -> None:
        """Call the handler once, inside the seam's middlewares when it has any."""
        event_id = str(event.event_id)
        correlation = event.correlation_id
        # bound for the handler's log lines (handler, context, attempt: once per transaction)
        _EVENT_ID.set(event_id)
        _EVENT_TYPE.set(event.event_name)
        _CORRELATION_ID.set(event_id if correlation is None else str(correlation))
        if self._through is None:
            self._call_handler(event, attempt, host, session)
        else:
            call = functools.partial(self._call_handler, event, attempt, host, session)
            anyio.from_thread.run(self._through_middlewares, event, call)

    async def _through_middlewares(self, event: DomainEvent, call: Callable[[], None]) -> None:
        """On the event loop (in a copy of the calling thread's context): the middlewares,
        then ``call`` in a worker thread of this applier's own, while the calling thread waits.

        Its own limiter: runner threads hold tokens of anyio's default one while they wait.
        """
        assert self._through is not None
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)  # one apply at a time per handler
        token = _HANDLER_CALL.set(call)
        try:
            await self._through(event)
        finally:
            _HANDLER_CALL.reset(token)

    async def _in_own_thread(self, event: DomainEvent) -> None:
        """The innermost Handler: the call ``_through_middlewares`` was given, in a thread."""
        await anyio.to_thread.run_sync(_HANDLER_CALL.get(), limiter=self._limiter)

    def _call_handler(
        self, event: DomainEvent, attempt: int, host: _RunnerTransactionHost, session: Session
    ) -> None:
        """Call the handler function once (see HandlerContext for what it may do)."""
        spec = self.spec
        if not spec.takes_context:
            if spec.is_async:
                anyio.from_thread.run(_await, spec.function, event)
            else:
                spec.function(event)
            return
        if spec.is_async:
            context = HandlerContext(spec, event, attempt, host, None)
            anyio.from_thread.run(_await, spec.function, event, context)
            # Buffered follow-ups go into the runner's transaction (host.transaction()).
            context.write_follow_ups()
        else:
            with ExitStack() as stack:
                spec.function(event, HandlerContext(spec, event, attempt, host, stack))
        session.flush()  # a handler's bad write fails here, attributed to its event
