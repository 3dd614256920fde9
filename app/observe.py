"""A handler-observing middleware: which handler ran on which event, and how it ended.

    log = HandlerLog()
    seam = bootstrap(middlewares=[log.middleware])

The engine binds structlog contextvars (``handler``, ``event_id``...) around every handler call
and runs middlewares inside that binding, so the middleware reads the handler's durable name
from there. Middlewares run on the event loop's thread: no locking is needed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from structlog.contextvars import get_contextvars

from engine.errors import error_line

if TYPE_CHECKING:
    import uuid

    from engine.events import DomainEvent
    from engine.types import Handler


@dataclass(frozen=True, slots=True)
class HandlerRun:
    """One call of one handler: its durable name and ``None`` on success, else the error."""

    handler: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the handler returned without raising."""
        return self.error is None


class HandlerLog:
    """Records every handler call by event id; ``calls`` counts them all (successes and failures)."""

    def __init__(self) -> None:
        self.runs: defaultdict[uuid.UUID, list[HandlerRun]] = defaultdict(list)
        self.calls = 0

    def middleware(self, handle: Handler) -> Handler:
        """Middleware (``Handler -> Handler``) recording each call of ``handle``."""

        async def observed(event: DomainEvent) -> None:
            name = str(get_contextvars().get("handler", "?"))
            try:
                await handle(event)
            except Exception as exc:
                self._record(event.event_id, HandlerRun(name, error_line(exc)))
                raise
            self._record(event.event_id, HandlerRun(name))

        return observed

    def of(self, event_id: uuid.UUID) -> list[HandlerRun]:
        """The calls made for ``event_id``, in order (retries appear as several calls)."""
        return list(self.runs.get(event_id, ()))

    def _record(self, event_id: uuid.UUID, run: HandlerRun) -> None:
        self.runs[event_id].append(run)
        self.calls += 1
