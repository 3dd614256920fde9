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
from typing import TYPE_CHECKING, Final, TypeVar

import click
import structlog

if TYPE_CHECKING:
    from collections.abc import Callable

_F = TypeVar("_F", bound="Callable[..., object]")

LEVELS: Final = ("debug", "info", "warning", "error")


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


def logging_options(command: _F) -> _F:
    """The ``--log-level`` and ``--json-logs`` options every long-running command takes."""
    command = click.option(
        "--json-logs", is_flag=True, help="Log JSON lines instead of human-readable ones."
    )(command)
    return click.option(
        "--log-level", default="info", show_default=True, type=click.Choice(LEVELS)
    )(command)
