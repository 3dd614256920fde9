"""Applying an event to one handler again, in this process, with the inbox: what replays share.

    async with Redeliverer(seam) as again:          # runs the seam's bus (follow-ups), no consumers
        delivery = await again.apply("shipping.create_label", event)
        delivery.outcome                              # delivered | already applied | failed

Contract:

* ``apply`` claims ``(handler, event_id)`` in the inbox and runs the handler in the same
  transaction (engine.inbox_apply.InboxApplier.apply_one, as the consumer runner does after a
  failed batch): its writes, its follow-up events and the inbox row commit together. An event
  the inbox already holds is not applied again (``already applied``); a handler that raises
  rolls everything back (``failed``, with the error). Sync handlers run in a worker thread.
* Follow-up events go where the handler's context routes them: outbox rows for ``dual`` and
  ``broker`` contexts, and, for ``local`` and ``dual``, this process's bus, which runs while the
  Redeliverer is open (``EventSeam.run(consume=False)``: no consumer groups are joined). Leaving
  waits until the bus handled them (``join``), then stops it; what its handlers fail on becomes
  a dead letter like in any process.
* ``pending`` tells, without applying anything, which events a handler has not applied yet.

Handlers are found by durable name among every context of the application, detached ones
included: the handler code is the application's, wherever it usually runs.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.to_thread

from . import inbox
from .errors import SettingsError, UnknownHandlerError, error_line
from .inbox_apply import InboxApplier, RunnerHost

if TYPE_CHECKING:
    import uuid
    from collections.abc import Iterable

    from anyio.abc import TaskGroup

    from .contexts import HandlerSpec
    from .events import DomainEvent


class Outcome(StrEnum):
    """What applying one event to one handler came to."""

    DELIVERED = "delivered"
    ALREADY_APPLIED = "already applied"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event applied (or not) to one handler; ``error`` says why it failed."""

    handler: str
    event_id: uuid.UUID
    event_type: str
    aggregate_id: str
    outcome: Outcome
    error: str | None = None


class RedeliveryHost(RunnerHost, Protocol):
    """What a Redeliverer needs from the application (EventSeam implements it)."""

    async def run(self, *, consume: bool = True, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Run the bus until ``aclose``."""
        ...

    async def join(self) -> None:
        """Wait until the bus handled everything handed to it."""
        ...

    async def aclose(self) -> None:
        """Stop the bus (drains)."""
        ...


def find_handler(host: RedeliveryHost, name: str) -> HandlerSpec:
    """The handler declared under the durable ``name``; UnknownHandlerError otherwise."""
    specs = {spec.name: spec for spec in host.contexts.handlers()}
    try:
        return specs[name]
    except KeyError:
        raise UnknownHandlerError(name, sorted(specs)) from None


class Redeliverer:
    """Applies events to handlers of ``host`` in this process (see the module docstring).

    Needs a database (``session_factory``); SettingsError otherwise. Use it as an async context
    manager: ``apply`` runs only while it is open.
    """

    def __init__(self, host: RedeliveryHost) -> None:
        if host.session_factory is None:
            raise SettingsError(
                "replaying needs the application's database (EventSeam(session_factory=...)) "
                "for the inbox"
            )
        self._host = host
        self._lock = threading.Lock()  # SQLite has one writer (shared by the appliers)
        self._appliers: dict[str, InboxApplier] = {}
        self._group: TaskGroup | None = None

    async def __aenter__(self) -> Redeliverer:
        self._group = await anyio.create_task_group().__aenter__()
        try:
            await self._group.start(functools.partial(self._host.run, consume=False))
        except BaseException as exc:
            await self._group.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        group, self._group = self._group, None
        if group is None:
            return
        with anyio.CancelScope(shield=True):
            await self._host.join()
            await self._host.aclose()
        await group.__aexit__(None, None, None)

    def handler(self, name: str) -> HandlerSpec:
        """The handler declared under ``name``; UnknownHandlerError otherwise."""
        return find_handler(self._host, name)

    async def pending(self, handler: str, event_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        """The ids among ``event_ids`` that ``handler`` has not applied (one query per chunk)."""
        ids = list(event_ids)
        return await anyio.to_thread.run_sync(self._pending, handler, ids)

    def _pending(self, handler: str, ids: list[uuid.UUID]) -> set[uuid.UUID]:
        factory = self._host.session_factory
        assert factory is not None  # checked in __init__
        with factory() as session:
            return inbox.filter_new(session, handler, ids)

    async def apply(self, handler: str, event: DomainEvent) -> Delivery:
        """Apply ``event`` to ``handler`` with the inbox; never raises for a handler failure."""
        if self._group is None:
            raise RuntimeError("Redeliverer.apply needs `async with Redeliverer(seam)`")
        applier = self._appliers.get(handler)
        if applier is None:
            applier = InboxApplier(self.handler(handler), self._host, self._lock)
            self._appliers[handler] = applier
        try:
            applied = await anyio.to_thread.run_sync(applier.apply_one, event, 1)
        except Exception as exc:
            return self._delivery(handler, event, Outcome.FAILED, error_line(exc))
        outcome = Outcome.DELIVERED if applied else Outcome.ALREADY_APPLIED
        return self._delivery(handler, event, outcome)

    @staticmethod
    def _delivery(
        handler: str, event: DomainEvent, outcome: Outcome, error: str | None = None
    ) -> Delivery:
        return Delivery(
            handler, event.event_id, event.event_name, event.aggregate_id, outcome, error
        )
