"""``eventseam worker --context NAME [--context ...]``: run contexts' handlers from Kafka.

This is how a context is detached from the monolith: the same handler code, loaded from the
application (``eventseam --app module:function``, an EventSeam), runs in its own process with
one consumer group per handler (engine.runner.ConsumerRunner). The monolith must stop running
those handlers locally (see the detach proposal in the runner's issue).

The worker does not run the in-memory bus: events its handlers publish reach other contexts
through the outbox and the relay only, so each chosen context that owns events must be in
``broker`` mode (``local`` would keep them in this process, ``dual`` would pile them up in
``EventSeam.undelivered``): other modes are refused.

The first SIGTERM or SIGINT stops gracefully: every handler finishes the record in hand, commits
its offsets and leaves its group; the process exits 0. A second signal stops at once (records in
hand are redelivered; the inbox absorbs them). Exit status 2 for an unknown context, a context
not in broker mode, an application that cannot be loaded, or a database whose eventseam schema is
older than this code or missing (outbox.migrate.require_schema; run ``eventseam db upgrade``);
1 without Kafka bootstrap servers.
This process configures structlog for itself (engine.cli.logging). With ``--metrics-port`` it
serves Prometheus metrics (engine.metrics): handler durations, dead letters and the lag of each
handler's group per partition; with ``--health-port``, liveness and readiness probes
(engine.health: ready once every handler's consumer started, while no fetch or inbox fails).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import anyio
import click
import structlog
from sqlalchemy import Engine

from engine.cli import app_loader
from engine.cli.logging import configure_logging
from engine.cli.options import (
    health_options,
    logging_options,
    metrics_options,
    serve_health,
    serve_metrics,
)
from engine.cli.signals import stop_on_signals
from engine.contexts import ContextMap
from engine.errors import SettingsError, UnknownContextError
from engine.modes import Mode
from outbox import migrate
from outbox.errors import KafkaSecurityError, SchemaError
from outbox.kafka_security import first_security_error
from outbox.process_tuning import tune_for_worker

from .failure import fail

if TYPE_CHECKING:
    from collections.abc import Sequence

    from engine.health import Health
    from engine.runner import ConsumerRunner, RunnerHost

log = structlog.get_logger(__name__)


@click.command()
@click.option(
    "--context",
    "contexts",
    multiple=True,
    required=True,
    help="a context whose handlers this worker runs (repeat for several)",
)
@logging_options
@metrics_options()
@health_options
@click.pass_context
def worker(
    ctx: click.Context,
    contexts: tuple[str, ...],
    log_level: str,
    json_logs: bool,
    metrics_port: int | None,
    metrics_addr: str,
    health_port: int | None,
    health_addr: str,
) -> None:
    """Run the handlers of each --context from Kafka until SIGTERM or SIGINT."""
    configure_logging(log_level, json_logs=json_logs)
    seam = load_app(ctx)
    chosen = list(dict.fromkeys(contexts))
    check_contexts(seam, chosen)
    if not seam.settings.kafka.bootstrap_servers:
        fail("no Kafka bootstrap servers: set EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS", 1)
    check_schema(seam)
    from engine.runner import ConsumerRunner

    try:
        runner = ConsumerRunner(seam, chosen)
    except (SettingsError, KafkaSecurityError) as exc:
        fail(str(exc))
    serve_metrics(metrics_port, metrics_addr)
    probes = serve_health(health_port, health_addr)
    tune_for_worker()
    try:
        anyio.run(serve, runner, probes, backend="asyncio")
    except* KafkaSecurityError as errors:  # a refused certificate: exit, do not retry
        fail(str(first_security_error(errors)), 1)
    finally:
        app_loader.dispose_app(seam)


def load_app(ctx: click.Context) -> RunnerHost:
    """The EventSeam built by the application factory named by ``eventseam --app``."""
    try:
        app_path, app = app_loader.load_app(ctx)
    except app_loader.AppLoadError as exc:
        fail(str(exc))
    missing = [
        name
        for name in ("settings", "registry", "session_factory", "publish", "check_publish")
        if not hasattr(app, name)
    ]
    if missing or not isinstance(getattr(app, "contexts", None), ContextMap):
        fail(
            f"the application from {app_path!r} is not an EventSeam "
            f"(missing {missing or 'contexts'})"
        )
    seam: RunnerHost = app  # type: ignore[assignment]  # checked above: an EventSeam
    return seam


def check_contexts(seam: RunnerHost, contexts: Sequence[str]) -> None:
    """Exit 2 for an unknown context, or one that owns events and is not in ``broker`` mode."""
    for name in contexts:
        try:
            context = seam.contexts[name]
        except UnknownContextError as exc:
            fail(str(exc))
        mode = seam.settings.mode_of(name)
        if context.owns and mode is not Mode.BROKER:
            fail(
                f"context {name!r} is in {mode.value} mode: this worker runs no in-memory bus, so "
                "the events its handlers publish must go through the outbox only; "
                f"set EVENTSEAM_CONTEXTS__{name.upper()}=broker"
            )


def check_schema(seam: RunnerHost) -> None:
    """Exit 2 when the database bound to ``seam.session_factory`` has an older eventseam schema
    or none.

    Without a bound Engine the worker uses no database, and nothing is checked.
    """
    bind = seam.session_factory.kw.get("bind") if seam.session_factory is not None else None
    if not isinstance(bind, Engine):
        return
    try:
        migrate.require_schema(bind)
    except SchemaError as exc:
        app_loader.dispose_app(seam)
        fail(str(exc))


async def serve(runner: ConsumerRunner, health: Health | None = None) -> None:
    """Run ``runner`` until a signal stops it; ``health`` gets its condition and the heartbeat."""
    async with anyio.create_task_group() as group:
        await group.start(
            functools.partial(stop_on_signals, grace=runner.settings.stop_timeout),
            runner.stop,
            group.cancel_scope,
            "worker.stopping",
        )
        if health is not None:
            health.watch("consumer_runner", runner.condition)
            group.start_soon(health.heartbeat)
        await runner.run()
        group.cancel_scope.cancel()
