"""The example monolith's command line: ``python -m app demo [--orders N] [--path full|local]
[--database PATH]``, ``python -m app serve [--host H] [--port P]`` (the web app on Flask's
development server)."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import click
import structlog
from rich.console import Console

from app.demo import DEFAULT_DATABASE, FULL, LOCAL, run_demo

#: Output width when stdout is not a terminal (rich would use 80 columns).
PIPED_WIDTH = 130


@click.group()
def main() -> None:
    """The example monolith (orders, payments, shipping) built on eventseam."""


@main.command()
@click.option(
    "--orders",
    "orders",
    type=click.IntRange(min=1, max=10_000),
    default=12,
    show_default=True,
    help="how many orders to place",
)
@click.option(
    "--database",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_DATABASE,
    show_default=True,
    help="SQLite file to use; deleted and recreated on every run",
)
@click.option(
    "--path",
    type=click.Choice([FULL, LOCAL]),
    default=None,
    help="full: local -> dual -> broker -> a detached context (needs Kafka: "
    "EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS, else the bundled broker); local: the in-memory bus only "
    "[default: full when Kafka can be used, else local]",
)
def demo(orders: int, database: Path, path: str | None) -> None:
    """Place orders, let the contexts react through events, check every order's final state."""
    _quiet_logging()
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = PIPED_WIDTH
    status = anyio.run(run_demo, orders, database, console, path)
    raise SystemExit(status)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="interface to listen on")
@click.option("--port", type=click.IntRange(0, 65_535), default=8000, show_default=True)
def serve(host: str, port: int) -> None:
    """Serve the example as a web app (app.web) on Flask's development server; gunicorn in production."""
    from app.web import create_app

    create_app().run(host=host, port=port, threaded=True)


#: Log events the demo expects and explains itself: the monolith's consumers subscribe to every
#: context's topic, whatever its mode (a flip may relay it at any time).
EXPECTED_WARNINGS = frozenset({"consumer.context_not_relayed"})


def _quiet_logging() -> None:
    """The demo prints its own report: show only warnings and errors from structlog."""
    structlog.configure(
        processors=[_drop_expected, *structlog.get_config()["processors"]],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )


def _drop_expected(
    logger: object, method: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    if event_dict.get("event") in EXPECTED_WARNINGS:
        raise structlog.DropEvent
    return event_dict
