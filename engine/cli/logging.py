"""structlog for the long-running commands (``eventseam relay``, ``eventseam worker``).

The library never calls ``structlog.configure()`` (the host owns logging); a command configures
it for its own process only, with the same processors everywhere: context variables first
(``event_id``, ``event_type``, ``context``, ``correlation_id``, ``handler``, ``attempt`` are bound
by the engine while it publishes, relays, dispatches and consumes), then level and time, then
JSON lines (``--json-logs``) or a console renderer for people.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(level: str, *, json_logs: bool) -> None:
    """structlog for this process: ``level`` and up, to stderr, as JSON or for humans."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json_logs
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        # Not cached: the engine logs on failures and state changes, never per event, and an
        # uncached logger follows a later configure() (a host embedding the command, tests).
        cache_logger_on_first_use=False,
    )
