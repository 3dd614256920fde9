"""Prometheus metrics: the metric objects and the small ``record_*`` functions the engine calls.

Every name starts with ``eventseam_`` and uses base units (seconds; rows and records are counts)::

    eventseam_outbox_backlog_rows{context}                   gauge      pending outbox rows
    eventseam_outbox_oldest_pending_age_seconds{context}     gauge      age of the oldest pending row
    eventseam_outbox_parked_rows{context}                    gauge      parked outbox rows
    eventseam_relay_messages_total{context,outcome}          counter    published | failed | parked
    eventseam_relay_batch_duration_seconds                   histogram  one relay round (claimed
                                                                        rows until every batch settled)
    eventseam_handler_duration_seconds{handler,transport}    histogram  one handler call, failures
                                                                        included; transport bus (the
                                                                        handlers of an EventSeam's
                                                                        bus) | kafka (runner)
    eventseam_dead_letters_total{handler,transport,reason}   counter    bus: failed | shutdown;
                                                                        kafka: the dlq_reason header
    eventseam_consumer_lag_records{group,topic,partition}    gauge      last fetch's high watermark
                                                                        minus the next offset to handle

The three outbox gauges come from one periodic GROUP BY query (``sample_outbox``, run by
``eventseam relay --metrics-port``), never from per-row bookkeeping; a context whose rows are
gone drops back to 0. The consumer runner sets the lag gauge every ``LAG_INTERVAL`` seconds.
``eventseam relay`` and ``eventseam worker`` serve the default registry with ``--metrics-port``
(``serve``); a host application exposes ``registry()`` on its own endpoint.

Optional dependency (the ``metrics`` extra, prometheus-client): ``prometheus_client`` is imported
on the first record, never when this module is imported (the import costs about 70 ms, which a
CLI command or a web worker that records nothing should not pay). Without the extra every
``record_*`` function is a no-op, ``timed_handler`` returns the handler unchanged, ``available()``
is False and ``serve`` raises SettingsError. Metrics are recorded into prometheus_client's
default ``REGISTRY``.

Multiprocess mode (gunicorn and other pre-fork servers): set ``PROMETHEUS_MULTIPROC_DIR`` to an
empty directory before the server starts (prometheus_client reads it when it is imported); each
process then writes its values to files there. Call ``mark_process_dead(worker.pid)`` from
gunicorn's ``child_exit`` hook, and serve ``registry()`` (a MultiProcessCollector over that
directory). Counters and histograms are summed over processes; the gauges show the most recent
value of a live process (``livemostrecent``).
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import importlib.util
import itertools
import os
import threading
import time
from collections import Counter as Tally
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final, NoReturn

import anyio
import anyio.to_thread
import structlog

from .errors import SettingsError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from prometheus_client import CollectorRegistry

    from .events import DomainEvent
    from .status import OutboxFigures
    from .types import Handler, Subscription

    Partition = tuple[str, int]

_log = structlog.get_logger(__name__)

BUS: Final = "bus"
"""``transport`` label of handlers run by the in-memory bus."""
KAFKA: Final = "kafka"
"""``transport`` label of handlers run by the consumer runner."""

PUBLISHED: Final = "published"
FAILED: Final = "failed"
PARKED: Final = "parked"

#: Seconds between two updates of the consumer lag gauge.
LAG_INTERVAL: Final = 5.0
#: Seconds between two outbox queries of ``sample_outbox`` (``eventseam relay --metrics-port``).
OUTBOX_INTERVAL: Final = 15.0

#: Handler call buckets (seconds): bus handlers take microseconds, Kafka ones milliseconds.
HANDLER_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
#: Relay round buckets (seconds).
BATCH_BUCKETS: Final = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


class _Metrics:
    """The metric objects, created once on first use (see the module docstring)."""

    def __init__(self, prometheus: Any) -> None:
        gauge, counter, histogram = prometheus.Gauge, prometheus.Counter, prometheus.Histogram
        recent = {"multiprocess_mode": "livemostrecent"}
        self.backlog = gauge(
            "eventseam_outbox_backlog_rows", "Pending outbox rows.", ["context"], **recent
        )
        self.oldest = gauge(
            "eventseam_outbox_oldest_pending_age_seconds",
            "Age of the oldest pending outbox row (0 when none).",
            ["context"],
            **recent,
        )
        self.parked = gauge(
            "eventseam_outbox_parked_rows", "Parked outbox rows.", ["context"], **recent
        )
        self.relayed = counter(
            "eventseam_relay_messages",
            "Outbox rows the relay handled, by outcome (published, failed, parked).",
            ["context", "outcome"],
        )
        self.batch = histogram(
            "eventseam_relay_batch_duration_seconds",
            "Seconds one relay round took, from claimed rows until every batch settled.",
            buckets=BATCH_BUCKETS,
        )
        self.handler = histogram(
            "eventseam_handler_duration_seconds",
            "Seconds one handler call took (failures included).",
            ["handler", "transport"],
            buckets=HANDLER_BUCKETS,
        )
        self.dead_letters = counter(
            "eventseam_dead_letters",
            "Events dead-lettered, by handler, transport and reason.",
            ["handler", "transport", "reason"],
        )
        self.lag = gauge(
            "eventseam_consumer_lag_records",
            "Records not handled yet per consumer group and partition (fetch high watermark).",
            ["group", "topic", "partition"],
            **recent,
        )


class _State:
    """Lazily created metrics, and the label sets last written by the sampled gauges."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.metrics: _Metrics | None = None
        self.installed: bool | None = None
        self.outbox_contexts: set[str] = set()
        self.lag_labels: dict[str, set[tuple[str, str]]] = {}


_state = _State()


def available() -> bool:
    """True when prometheus-client is installed (checked without importing it)."""
    if _state.installed is None:
        _state.installed = importlib.util.find_spec("prometheus_client") is not None
    return _state.installed


def _metrics() -> _Metrics | None:
    """The metric objects (created on first call), or None without prometheus-client."""
    metrics = _state.metrics
    if metrics is not None or not available():
        return metrics
    with _state.lock:
        if _state.metrics is None:
            import prometheus_client

            _state.metrics = _Metrics(prometheus_client)
        return _state.metrics


# -- recording ------------------------------------------------------------------------------


def record_outbox(figures: Mapping[str, OutboxFigures]) -> None:
    """Set the outbox gauges from one query's ``figures`` (context -> backlog, age, parked).

    Contexts reported earlier and absent now are set to 0.
    """
    metrics = _metrics()
    if metrics is None:
        return
    with _state.lock:
        gone = _state.outbox_contexts - set(figures)
        _state.outbox_contexts = set(figures) | _state.outbox_contexts
    for context in gone:
        for gauge in (metrics.backlog, metrics.oldest, metrics.parked):
            gauge.labels(context).set(0)
    for context, figure in figures.items():
        metrics.backlog.labels(context).set(figure.backlog)
        metrics.oldest.labels(context).set(figure.oldest_pending_age_seconds or 0.0)
        metrics.parked.labels(context).set(figure.parked)


def record_relay(outcome: str, contexts: Iterable[str]) -> None:
    """Count one relay ``outcome`` (published, failed, parked) per row, given each row's context."""
    metrics = _metrics()
    if metrics is None:
        return
    for context, count in Tally(contexts).items():
        metrics.relayed.labels(context, outcome).inc(count)


def record_relay_batch(seconds: float) -> None:
    """Observe the duration of one relay round."""
    metrics = _metrics()
    if metrics is not None:
        metrics.batch.observe(seconds)


def handler_observer(handler: str, transport: str) -> Callable[[float], None]:
    """A function that observes one call's seconds of ``handler`` (a no-op without the extra).

    The labelled histogram is looked up on the first call, so building one imports nothing.
    """
    observe: Callable[[float], None] | None = None

    def observed(seconds: float) -> None:
        nonlocal observe
        if observe is None:
            histogram = _handler_histogram(handler, transport)
            observe = _ignore if histogram is None else histogram.observe
        observe(seconds)

    return observed


def handler_batch_observer(handler: str, transport: str) -> Callable[[Sequence[float]], None]:
    """``handler_observer`` for many calls at once (the consumer runner's transactions).

    Counts every value exactly as one ``Histogram.observe`` each would (same buckets, same sum),
    but takes each touched bucket's lock once per call of the observer rather than two locks
    and a Python bucket scan per value: 0.1 against 1.0 us per value, measured.
    """
    observe_all: Callable[[Sequence[float]], None] | None = None

    def observed(seconds: Sequence[float]) -> None:
        nonlocal observe_all
        if observe_all is None:
            histogram = _handler_histogram(handler, transport)
            observe_all = (
                _ignore_all if histogram is None else functools.partial(_observe_all, histogram)
            )
        if seconds:
            observe_all(seconds)

    return observed


def _handler_histogram(handler: str, transport: str) -> Any:
    """The handler-duration histogram labelled ``(handler, transport)``; None without the extra."""
    metrics = _metrics()
    return None if metrics is None else metrics.handler.labels(handler, transport)


def _observe_all(histogram: Any, seconds: Sequence[float]) -> None:
    """``histogram.observe(value)`` for each value, grouped by bucket.

    Reads prometheus_client's histogram internals (``_upper_bounds``, ``_buckets``, ``_sum``:
    the same names in every release this project supports, >= 0.21); a release without them
    gets one ``observe`` per value.
    """
    try:
        bounds, buckets, total = histogram._upper_bounds, histogram._buckets, histogram._sum
    except AttributeError:
        for value in seconds:
            histogram.observe(value)
        return
    total.inc(sum(seconds))
    # bisect_left: the first bound >= value, the one observe's ``value <= bound`` scan finds
    # (the last bound is +Inf). Durations are never NaN, which observe counts in no bucket.
    for index, count in Tally(map(bisect.bisect_left, itertools.repeat(bounds), seconds)).items():
        buckets[index].inc(count)


def timed_handler(handle: Handler, handler: str, transport: str) -> Handler:
    """``handle`` wrapped to observe each call's duration, failures included.

    Returns ``handle`` itself when prometheus-client is not installed (no cost on the hot path).
    """
    if not available():
        return handle
    observe = handler_observer(handler, transport)
    clock = time.perf_counter

    async def timed(event: DomainEvent) -> None:
        start = clock()
        try:
            await handle(event)
        finally:
            observe(clock() - start)

    return timed


def timed_subscription(subscription: Subscription) -> Subscription:
    """``subscription`` with its handle timed (``timed_handler``, transport ``bus``).

    EventSeam times the subscriptions it builds; a Bus used on its own times nothing (its
    no-op benchmark dispatches in about 0.1 µs, which one observation would multiply by 8).
    """
    handle = timed_handler(subscription.handle, subscription.name, BUS)
    return subscription if handle is subscription.handle else replace(subscription, handle=handle)


def record_dead_letter(handler: str, transport: str, reason: str, count: int = 1) -> None:
    """Count ``count`` events of ``handler`` dead-lettered for ``reason``."""
    metrics = _metrics()
    if metrics is not None and count:
        metrics.dead_letters.labels(handler, transport, reason).inc(count)


def record_consumer_lag(lags: Mapping[str, Mapping[Partition, int]]) -> None:
    """Set the lag gauge of each (group, topic, partition); drop a group's unassigned partitions."""
    metrics = _metrics()
    if metrics is None:
        return
    for group, partitions in lags.items():
        labels = {(topic, str(number)) for topic, number in partitions}
        with _state.lock:
            stale = _state.lag_labels.get(group, set()) - labels
            _state.lag_labels[group] = labels
        for topic, label in stale:
            _remove(metrics.lag, group, topic, label)
        for (topic, number), lag in partitions.items():
            metrics.lag.labels(group, topic, str(number)).set(lag)


def _remove(gauge: Any, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)


def _ignore(seconds: float) -> None:
    """The observer of a handler when prometheus-client is missing."""


def _ignore_all(seconds: Sequence[float]) -> None:
    """The batch observer of a handler when prometheus-client is missing."""


# -- sampling ---------------------------------------------------------------------------------


async def every(seconds: float, action: Callable[[], object]) -> NoReturn:
    """Call ``action`` now and then every ``seconds`` until cancelled."""
    while True:
        action()
        await anyio.sleep(seconds)


async def sample_outbox(database_url: str, *, interval: float = OUTBOX_INTERVAL) -> NoReturn:
    """Query the outbox every ``interval`` seconds and set the outbox gauges, until cancelled.

    One GROUP BY query per round (engine.status.outbox_figures) in a worker thread, on an engine
    of its own; database errors are logged and the next round tries again.
    """
    from sqlalchemy import create_engine
    from sqlalchemy.exc import SQLAlchemyError

    from .status import read_outbox_figures

    engine = create_engine(database_url, pool_pre_ping=True)
    try:
        while True:
            try:
                figures = await anyio.to_thread.run_sync(read_outbox_figures, engine)
            except SQLAlchemyError as exc:
                _log.warning("metrics.outbox_query_failed", error=str(exc))
            else:
                record_outbox(figures)
            await anyio.sleep(interval)
    finally:
        engine.dispose()


# -- exposing -------------------------------------------------------------------------------


def registry() -> CollectorRegistry:
    """The registry to expose: a MultiProcessCollector's in multiprocess mode, else REGISTRY.

    Raises SettingsError without prometheus-client.
    """
    _require()
    import prometheus_client
    from prometheus_client import multiprocess

    _metrics()
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return prometheus_client.REGISTRY
    collected = prometheus_client.CollectorRegistry()
    multiprocess.MultiProcessCollector(collected)  # type: ignore[no-untyped-call]
    return collected


@dataclass(frozen=True, slots=True)
class MetricsServer:
    """The HTTP endpoint ``serve`` started: the port it listens on, and how to stop it."""

    port: int
    close: Callable[[], None]


def serve(port: int, addr: str = "0.0.0.0") -> MetricsServer:
    """Serve ``registry()`` over HTTP on ``addr:port`` (0: any free port) from a daemon thread.

    Raises SettingsError without prometheus-client, OSError when the port is taken.
    """
    exposed = registry()
    import prometheus_client

    server, thread = prometheus_client.start_http_server(port, addr, registry=exposed)

    def close() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    bound = int(server.server_port)
    _log.info("metrics.serving", addr=addr, port=bound)
    return MetricsServer(bound, close)


def mark_process_dead(pid: int) -> None:
    """Multiprocess mode: drop the live gauges of process ``pid`` (gunicorn's ``child_exit``)."""
    if not available() or not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def _require() -> None:
    if not available():
        raise SettingsError("metrics need prometheus-client: pip install 'eventseam[metrics]'")
