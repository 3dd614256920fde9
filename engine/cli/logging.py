"""structlog for the long-running commands (``eventseam relay``, ``eventseam worker``).

The library never calls ``structlog.configure()`` (the host owns logging); a command configures
it for its own process only, with the same processors everywhere: context variables first
(``event_id``, ``event_type``, ``context``, ``correlation_id``, ``handler``, ``attempt`` are bound
by the engine while it publishes, relays, dispatches and consumes), then level and time, then
JSON lines (``--json-logs``) or a console renderer for people.

Records of the standard ``logging`` module (aiokafka's connection errors, SQLAlchemy, Alembic)
take the same path, with their ``logger`` name, so ``--json-logs`` writes nothing but JSON
lines: those of WARNING and up (every one at ``--log-level debug``; the libraries' INFO lines
are start-up and group-membership chatter). Only when the process has no root handler of its
own: a host that configured logging (Django's ``LOGGING`` with a root logger, for one) keeps
its own.
"""

from __future__ import annotations

import logging
import sys
from typing import Final

import structlog

#: Marks the root handler configure_logging installed (replaced, never stacked, on a later call).
_OURS: Final = "_eventseam_handler"


def configure_logging(level: str, *, json_logs: bool) -> None:
    """structlog and the standard ``logging`` records for this process: ``level`` and up, to
    stderr, as JSON or for humans."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    chain: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
    ]
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*chain, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        # Not cached: the engine logs on failures and state changes, never per event, and an
        # uncached logger follows a later configure() (a host embedding the command, tests).
        cache_logger_on_first_use=False,
    )
    _route_standard_logging(numeric_level, chain, renderer)


def _route_standard_logging(
    level: int, chain: list[structlog.typing.Processor], renderer: structlog.typing.Processor
) -> None:
    """A root handler rendering ``logging`` records as structlog does, unless the host has one."""
    root = logging.getLogger()
    if any(not getattr(handler, _OURS, False) for handler in root.handlers):
        return
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*chain, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    setattr(handler, _OURS, True)
    root.addHandler(handler)
    root.setLevel(level if level <= logging.DEBUG else max(level, logging.WARNING))
