"""Waking the relay: PostgreSQL LISTEN/NOTIFY, with polling as the fallback.

On PostgreSQL a statement-level ``AFTER INSERT`` trigger on ``eventseam_outbox`` calls
``pg_notify('eventseam_outbox', '')``; the relay LISTENs on a dedicated connection and rings its
Doorbell, so rows reach it in about half a millisecond instead of a poll interval (DESIGN.md).
PostgreSQL folds identical notifications of one transaction into one. The trigger is installed by
the Alembic revision ``0005`` and by ``install_notify_trigger(engine)`` (after ``create_all``).

Polling stays on (``RelaySettings.poll_interval``): a lost listener connection, a missing
trigger or SQLite only make the relay slower, never stuck.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from sqlalchemy import Engine, text

from .table import SCHEMA_LOCK_KEY, outbox

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.ext.asyncio import AsyncEngine

    from engine.retry import RetryPolicy

log = structlog.get_logger(__name__)

CHANNEL = "eventseam_outbox"
FUNCTION = "eventseam_outbox_notify"
TRIGGER = "eventseam_outbox_notify"

CREATE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', '');
    RETURN NULL;
END;
$$
"""
DROP_TRIGGER = f"DROP TRIGGER IF EXISTS {TRIGGER} ON {outbox.name}"
CREATE_TRIGGER = f"CREATE TRIGGER {TRIGGER} AFTER INSERT ON {outbox.name} FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}()"
DROP_FUNCTION = f"DROP FUNCTION IF EXISTS {FUNCTION}()"

#: Statements that install the trigger (idempotent), in order.
INSTALL_DDL = (CREATE_FUNCTION, DROP_TRIGGER, CREATE_TRIGGER)
#: Statements that remove it, in order.
UNINSTALL_DDL = (DROP_TRIGGER, DROP_FUNCTION)
#: Wakes listening relays by hand (parked rows sent back to pending, for example).
NOTIFY_SQL = f"SELECT pg_notify('{CHANNEL}', '')"
#: Seconds between liveness checks of the LISTEN connection.
KEEPALIVE_SECONDS = 30.0


def install_notify_trigger(bind: Engine | Connection) -> bool:
    """Install the NOTIFY trigger on PostgreSQL (idempotent); False, doing nothing, elsewhere.

    Safe from several processes at once: it takes the schema lock (``SCHEMA_LOCK_KEY``) first,
    in the transaction that runs the DDL (concurrent ``CREATE OR REPLACE FUNCTION`` fails with
    "tuple concurrently updated" otherwise).
    """
    if bind.dialect.name != "postgresql":
        return False
    if isinstance(bind, Engine):
        with bind.begin() as connection:
            _install(connection)
    else:
        _install(bind)
    return True


def _install(connection: Connection) -> None:
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
    _execute_all(connection, INSTALL_DDL)


def _execute_all(connection: Connection, statements: tuple[str, ...]) -> None:
    for statement in statements:
        connection.execute(text(statement))


class Doorbell:
    """A wake-up signal: ``ring`` from anywhere in the event loop, ``wait`` in the relay.

    ``rung_at`` is the ``time.monotonic()`` of the first ring the last consumed wake-up carried.
    """

    def __init__(self) -> None:
        self._event = anyio.Event()
        self.rung_at = 0.0

    def ring(self) -> None:
        """Wake the waiter (or the next one)."""
        if not self._event.is_set():
            self.rung_at = time.monotonic()
        self._event.set()

    async def wait(self, seconds: float) -> bool:
        """Wait for a ring, at most ``seconds``; True when rung. Consumes the ring."""
        with anyio.move_on_after(seconds):
            await self._event.wait()
        rung = self._event.is_set()
        if rung:
            self._event = anyio.Event()
        return rung


class NotifyListener:
    """LISTENs on PostgreSQL and rings ``doorbell`` for every notification; reconnects forever."""

    def __init__(self, engine: AsyncEngine, doorbell: Doorbell, policy: RetryPolicy) -> None:
        self._engine, self._doorbell, self._policy = engine, doorbell, policy

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen until cancelled (returns at once when the database is not PostgreSQL)."""
        task_status.started()
        if self._engine.dialect.name != "postgresql":
            return
        failures = 0
        while True:
            try:
                await self._listen()
            except Exception as exc:  # any driver error: polling covers, retry later
                failures += 1
                log.warning("relay.listen_failed", error=repr(exc), attempt=failures)
            self._doorbell.ring()  # rows may have arrived while nobody listened
            await anyio.sleep(self._policy.delay(max(failures, 1)))

    async def _listen(self) -> None:
        async with self._engine.connect() as connection:
            raw = (await connection.get_raw_connection()).driver_connection
            log.info("relay.listening", channel=CHANNEL)
            if self._engine.dialect.driver == "asyncpg":
                await _listen_asyncpg(raw, self._doorbell)
            else:
                await _listen_psycopg(raw, self._doorbell)


async def _listen_asyncpg(raw: Any, doorbell: Doorbell) -> None:
    lost = anyio.Event()

    def notified(*_: object) -> None:
        doorbell.ring()

    def terminated(*_: object) -> None:
        lost.set()

    raw.add_termination_listener(terminated)
    await raw.add_listener(CHANNEL, notified)
    while not lost.is_set():
        with anyio.move_on_after(KEEPALIVE_SECONDS):
            await lost.wait()
        if not lost.is_set():
            await raw.execute("SELECT 1")  # raises when the connection silently died
    raise ConnectionError("the LISTEN connection was closed")


async def _listen_psycopg(raw: Any, doorbell: Doorbell) -> None:
    await raw.execute(f"LISTEN {CHANNEL}")
    async for _ in raw.notifies():
        doorbell.ring()
