"""The relay: forwards pending outbox rows to Kafka, then deletes them or marks them published.

    relay = Relay(settings)
    async with anyio.create_task_group() as group:
        await group.start(relay.run)   # returns once connected and holding its slots
        ...
        relay.stop()                   # graceful: in-flight batches land, leases released

Contract (DESIGN.md, "The relay"):

- A committed row is never lost: it stays ``pending`` until the broker acknowledged it, and is then
  deleted (``retention_seconds == 0``) or marked ``published`` by its exact ``seq``. Only rows of
  the batch in flight at a crash may be sent twice; consumers drop them by ``event_id``.
- Rows are claimed by status (outbox.claim), so a transaction that commits after rows with a
  larger ``seq`` were published is still sent.
- Per-aggregate order, with one relay or several: slots (``keyhash % slots``) are leased to one
  relay at a time (outbox.leases); within a slot rows are sent in ``seq`` order; per partition one
  batch is in flight and a failed batch stops the later ones (outbox.lanes).
- Broker outage: the relay backs off with jitter (at most ``OUTAGE_BACKOFF_MAX`` s between tries),
  keeps rows pending, never exits, re-creates the topics the broker lost and drains the backlog
  on recovery.
- Rows that fail for good are parked after ``max_attempts`` without holding up other aggregates
  (outbox.parked). Published rows kept for a window are purged in batches (outbox.retention).
- A PostgreSQL statement or connect unanswered after ``RelaySettings.command_timeout`` fails like
  an outage (the connection is dropped and opened again).
- ``condition`` (engine.health): running once started, stopping after ``stop()``; a failing send
  names ``broker`` and a failing connect or claim ``database``, until one succeeds again.

Pipeline: while rounds are in flight (at most ``PIPELINE_DEPTH``, so memory stays flat whatever
the backlog) the next one is fetched, and keeps fetching until there is room (up to
``ROUND_FETCHES`` fetches), so a backlog goes out in larger producer batches. Acknowledged rows
are marked in the background (claim.Marker). Rows the relay holds (in a round, or acknowledged
and not yet marked) are left out of what it fetches, so it scans from the first pending row
again without draining the pipeline: whenever it caught up, and at least every
``full_scan_interval`` (draining first when it holds more than a batch). After a failure or a
change of slots it drains first. A short scan from the start has seen every pending row: the
relay lets its rounds land, waits for the next NOTIFY (or ``poll_interval``), then lingers
until ``KafkaSettings.linger_ms`` after the first ring before it fetches (a ring that came while
the rounds landed has waited already), so rows committed close together go out together
(measured at 1,000 commits/s on the bundled broker, bench/relay_latency.py: p99 commit ->
consumed 47 -> 28 ms, p50 11 -> 12 ms, relay CPU 31 -> 18 %; linger_ms=0 gives the lowest p50).
A backlog never waits: its batches are closed as soon as they are full.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import structlog
from sqlalchemy.exc import SQLAlchemyError

from engine.errors import error_line
from engine.health import BROKER, DATABASE, Condition
from engine.metrics import record_relay_batch
from engine.retry import RetryPolicy

from .claim import Claims, Marker, PendingRow, create_relay_engine
from .errors import PublishError
from .kafka import KafkaPublisher, KafkaTopicAdmin
from .lanes import Dispatcher
from .leases import Leases
from .notify import Doorbell, NotifyListener
from .parked import Failures
from .retention import Purger
from .topics import Topics
from .tracing import traced_publisher

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlalchemy.ext.asyncio import AsyncEngine

    from engine.settings import EventSeamSettings

    from .topics import TopicAdmin

log = structlog.get_logger(__name__)

#: Cap, in seconds, on the wait between tries while the broker or the database is unreachable
#: (whatever RelaySettings.backoff_max says): a try during an outage costs one refused connect,
#: or waits out the request timeout itself, so a short cap costs nothing and the first publish
#: comes at most about a second after the network returns (docs/RELIABILITY.md, item 3).
OUTAGE_BACKOFF_MAX = 1.0
#: Rounds in flight at once (sending or waiting for acks); one more is fetched meanwhile.
PIPELINE_DEPTH = 3
#: A round holds up to this many fetches of ``batch_size`` rows: while the pipeline is full, the
#: next round keeps fetching (so a backlog goes out in larger producer batches).
ROUND_FETCHES = 4


def default_owner() -> str:
    """A relay id unique across hosts and restarts: host:pid:random."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class _Rounds:
    """Counts rounds in flight; the pump waits for room, or for none left."""

    def __init__(self, depth: int) -> None:
        self.depth, self.count = depth, 0
        self._changed = anyio.Event()

    def begin(self) -> None:
        self.count += 1

    def end(self) -> None:
        self.count -= 1
        self._changed.set()
        self._changed = anyio.Event()

    def has_room(self) -> bool:
        return self.count < self.depth

    async def room(self) -> None:
        while self.count >= self.depth:
            await self._changed.wait()

    async def quiet(self) -> None:
        while self.count:
            await self._changed.wait()


class Relay:
    """Forwards pending outbox rows of its leased slots to Kafka (see the module docstring).

    ``publisher``, ``admin`` and ``engine`` default to ones built from ``settings``; the relay
    closes what it built. ``grace`` bounds how long a stop waits for batches in flight.
    """

    def __init__(
        self,
        settings: EventSeamSettings,
        *,
        publisher: KafkaPublisher | None = None,
        admin: TopicAdmin | None = None,
        engine: AsyncEngine | None = None,
        owner: str | None = None,
        grace: float = 10.0,
    ) -> None:
        relay = settings.relay
        self.settings, self.owner, self.grace = settings, owner or default_owner(), grace
        self._own_engine = engine is None
        self._engine = engine or create_relay_engine(
            settings.database_url, command_timeout=relay.command_timeout
        )
        self._publisher = publisher or KafkaPublisher(
            settings.kafka, client_id=f"{settings.kafka.client_id}-relay"
        )
        self._admin = admin or KafkaTopicAdmin(settings.kafka)
        self._policy = RetryPolicy.from_settings(relay)
        #: Waits while the broker or the database is unreachable: capped at OUTAGE_BACKOFF_MAX.
        self._outage_policy = RetryPolicy(
            initial=min(self._policy.initial, OUTAGE_BACKOFF_MAX),
            maximum=min(self._policy.maximum, OUTAGE_BACKOFF_MAX),
        )
        self._claims = Claims(
            self._engine, slots=relay.slots, delete_sent=relay.retention_seconds == 0
        )
        self._marker = Marker(self._claims, self._policy)
        self._failures = Failures(self._claims, self._policy)
        self._leases = Leases(
            self._engine, owner=self.owner, slots=relay.slots, lease_seconds=relay.lease_seconds
        )
        self._topics = Topics(settings, self._admin, self._publisher.partitions)
        # Producer spans when a TracerProvider is set (outbox.tracing); else the publisher itself.
        self._dispatcher = Dispatcher(
            traced_publisher(self._publisher), self._topics, self._failures, self._marker
        )
        self._doorbell = Doorbell()
        self._listener = NotifyListener(self._engine, self._doorbell, self._policy)
        self._purger = Purger(
            self._engine, relay, inbox=settings.inbox, active=lambda: 0 in self._leases.owned
        )
        self._rounds = _Rounds(PIPELINE_DEPTH)
        self._stopped = anyio.Event()
        self._cursor = 0
        self._rescan = False
        #: seqs of the rounds in flight (acknowledged ones then sit in Marker.outstanding)
        self._sending: set[int] = set()
        self._slots_version = -1
        self._outages = 0
        self._acked_seen = 0
        self.full_scan_interval = max(1.0, 10 * relay.poll_interval)
        #: Seconds between a wake-up and the fetch when caught up (the producer's linger_ms).
        self._linger = settings.kafka.linger_ms / 1000
        self._next_full_scan = 0.0
        #: Started, stopping, failing dependencies ("broker", "database"): engine.health's /readyz.
        self.condition = Condition()

    @property
    def owned_slots(self) -> frozenset[int]:
        """Slots this relay holds right now."""
        return self._leases.owned

    def stop(self) -> None:
        """Ask ``run`` to return: stop claiming, let batches in flight land, release the leases.

        Call from the event loop's thread.
        """
        self.condition.stopping()
        self._stopped.set()
        self._doorbell.ring()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Relay until ``stop()`` or cancellation; reports started once connected with slots."""
        log.info("relay.starting", owner=self.owner)
        try:
            async with anyio.create_task_group() as group:
                await self._connect()
                if self._stopped.is_set():
                    return
                await group.start(self._leases.run, self._policy)
                await group.start(self._marker.run)
                await group.start(self._listener.run)
                await group.start(self._purger.run)
                await self._create_startup_topics()
                task_status.started()
                self.condition.running()
                await self._pump(group)
                await self._finish()
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._close()
        log.info("relay.stopped", owner=self.owner)

    async def _connect(self) -> None:
        await self._retrying("relay.broker_unavailable", BROKER, self._publisher.start)
        await self._retrying("relay.database_unavailable", DATABASE, self._leases.setup)
        log.info("relay.connected", owner=self.owner, idempotent=self._publisher.idempotent)

    async def _retrying(
        self, event: str, dependency: str, action: Callable[[], Awaitable[None]]
    ) -> None:
        attempt = 0
        while not self._stopped.is_set():
            try:
                await action()
                self.condition.recovered(dependency)
                return
            except (PublishError, SQLAlchemyError, OSError) as exc:
                attempt += 1
                log.warning(event, owner=self.owner, error=str(exc), attempt=attempt)
                self.condition.failing(dependency, error_line(exc))
                await self._sleep(self._outage_policy.delay(attempt))

    async def _create_startup_topics(self) -> None:
        for topic, context in self._topics.startup_topics().items():
            try:
                await self._topics.partitions(topic, context)
            except PublishError as exc:
                log.warning("relay.topic_not_created", topic=topic, error=exc.reason)

    async def _sleep(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self._stopped.wait()

    async def _pump(self, group: anyio.abc.TaskGroup) -> None:
        batch_size = self.settings.relay.batch_size
        while not self._stopped.is_set():
            if self._must_settle():
                await self._settle()
                continue
            if self._rescan or (self._cursor and time.monotonic() > self._next_full_scan):
                if len(self._sending) + len(self._marker.outstanding) > batch_size:
                    await self._settle()  # cheaper than fetching the held rows again
                    continue
                self._restart()
            if not (self._leases.owned and self._leases.valid()):
                await self._doorbell.wait(self.settings.relay.poll_interval)
                continue
            lost, from_start = self._leases.lost, self._cursor == 0
            rows = await self._claim(batch_size)
            # A short scan from the start saw every pending row: wait for the next commit.
            seen_all = rows is not None and from_start and self._rescan
            if rows:
                if not self._rounds.has_room():
                    rows = await self._fill_round(rows, batch_size)
                    await self._rounds.room()
                self._dispatch(group, rows, lost)
            if seen_all:
                self._cursor, self._rescan = 0, False
                # Caught up: let the round land, wait for a commit, then linger, so commits that
                # arrive together go out together (the broker pays per request and per batch).
                await self._rounds.quiet()
                if await self._doorbell.wait(self.settings.relay.poll_interval):
                    # Linger from the first ring: commits made while the round landed waited.
                    waited = time.monotonic() - self._doorbell.rung_at
                    if waited < self._linger:
                        await self._sleep(self._linger - waited)

    async def _claim(self, limit: int) -> list[PendingRow] | None:
        """The next rows to send: a fetch after the cursor, less the rows this relay holds.

        Held rows (in a round, or acknowledged and not yet marked) are still pending in the
        database, so a scan from the start sees them again; they are left out here instead of
        waiting for the pipeline to drain. A short fetch (caught up) sets ``_rescan``: the next
        fetch starts from the first pending row, which finds late commits.
        """
        marked = self._marker.take_marked()
        rows = await self._fetch(limit)
        self._marker.forget(marked)
        if not rows:
            if rows is not None:
                self._rescan = True
            return rows
        self._cursor = rows[-1].seq
        self._rescan = self._rescan or len(rows) < limit
        sending, outstanding = self._sending, self._marker.outstanding
        if sending or outstanding:
            rows = [row for row in rows if row.seq not in sending and row.seq not in outstanding]
        return rows

    def _dispatch(self, group: anyio.abc.TaskGroup, rows: list[PendingRow], lost: int) -> None:
        self._sending.update(row.seq for row in rows)
        self._rounds.begin()
        group.start_soon(self._round, rows, lost)

    def _restart(self) -> None:
        """Scan again from the first pending row without waiting for the pipeline to drain."""
        self._cursor, self._rescan = 0, False
        self._next_full_scan = time.monotonic() + self.full_scan_interval
        if self._dispatcher.acked != self._acked_seen:
            self._acked_seen, self._outages = self._dispatcher.acked, 0

    async def _fill_round(self, rows: list[PendingRow], batch_size: int) -> list[PendingRow]:
        """While the pipeline is full, fetch on into the next round (up to ``ROUND_FETCHES``).

        A round is sent as one producer batch per partition, so a backlog goes out in fewer,
        larger batches when the broker is slower than the database. Rows fetched after a lease
        loss are refused by the round's ``lost`` check, like the first ones.
        """
        limit = batch_size * ROUND_FETCHES
        while (
            not self._rescan
            and len(rows) < limit
            and not self._rounds.has_room()
            and not self._stopped.is_set()
            and not self._must_settle()
        ):
            more = await self._claim(batch_size)
            if more is None:
                break
            rows += more
        return rows

    async def _fetch(self, limit: int) -> list[PendingRow] | None:
        """The next rows to send; None after a database failure (already waited out)."""
        try:
            excluded = self._failures.excluded_keys()
            rows = await self._claims.fetch(
                self._leases.owned, after=self._cursor, limit=limit, exclude_keys=excluded
            )
        except (SQLAlchemyError, OSError) as exc:
            self._outages += 1
            log.warning(
                "relay.fetch_failed", owner=self.owner, error=str(exc), attempt=self._outages
            )
            self.condition.failing(DATABASE, error_line(exc))
            await self._sleep(self._outage_policy.delay(self._outages))
            self._rescan = True
            return None
        self.condition.recovered(DATABASE)
        return rows

    async def _round(self, rows: list[PendingRow], lost: int) -> None:
        def may_send() -> bool:
            return self._leases.valid() and self._leases.lost == lost

        started = time.perf_counter()
        try:
            await self._dispatcher.send_round(rows, may_send)
            if self._dispatcher.retry_error is None:
                self.condition.recovered(BROKER)
        finally:
            self._sending.difference_update(row.seq for row in rows)
            self._rounds.end()
            record_relay_batch(time.perf_counter() - started)

    def _must_settle(self) -> bool:
        dispatcher, leases = self._dispatcher, self._leases
        if dispatcher.rescan or dispatcher.retry_error is not None:
            return True
        if leases.version != self._slots_version or leases.surplus:
            return True
        now = time.monotonic()
        return any(until <= now for until in self._failures.blocked.values())

    async def _settle(self) -> None:
        """Let the pipeline drain, back off after a failure, apply slot changes, rescan from the start."""
        await self._rounds.quiet()
        await self._marker.drained()
        await anyio.lowlevel.checkpoint()
        self._failures.excluded_keys()  # drops expired blocks: their rows are in the next scan
        error = self._dispatcher.retry_error
        self._dispatcher.reset()
        if self._dispatcher.acked != self._acked_seen:
            self._acked_seen, self._outages = self._dispatcher.acked, 0
        if error is not None:
            self._outages += 1
            log.warning(
                "relay.send_failed",
                owner=self.owner,
                topic=error.topic,
                error=error.reason,
                attempt=self._outages,
            )
            self.condition.failing(BROKER, f"{error.topic}: {error.reason}")
            await self._sleep(self._outage_policy.delay(self._outages))
        if self._leases.surplus:
            await self._release_surplus()
        self._slots_version = self._leases.version
        self._cursor, self._rescan = 0, False
        self._next_full_scan = time.monotonic() + self.full_scan_interval

    async def _release_surplus(self) -> None:
        try:
            await self._leases.release_surplus()
        except (SQLAlchemyError, OSError) as exc:
            log.warning("relay.release_failed", owner=self.owner, error=str(exc))

    async def _finish(self) -> None:
        """Graceful stop: batches in flight land and their rows are marked (within ``grace``)."""
        with anyio.move_on_after(self.grace):
            await self._rounds.quiet()
            await self._marker.drained()

    async def _close(self) -> None:
        """Flush the producer, mark what it acknowledged, release the leases, close connections."""
        await self._publisher.aclose(self.grace)
        with anyio.move_on_after(self.grace):
            await self._best_effort(self._marker.flush)
        with anyio.move_on_after(self.grace):
            await self._best_effort(self._leases.release_all)
        closers = (
            self._admin.aclose,
            self._claims.aclose,
            self._leases.aclose,
            self._purger.aclose,
        )
        for close in closers:
            await self._best_effort(close)
        if self._own_engine:
            await self._engine.dispose()

    async def _best_effort(self, action: Callable[[], Awaitable[None]]) -> None:
        try:
            await action()
        except (SQLAlchemyError, OSError, PublishError) as exc:
            log.warning(
                "relay.shutdown_step_failed",
                owner=self.owner,
                step=getattr(action, "__name__", "?"),
                error=str(exc),
            )
