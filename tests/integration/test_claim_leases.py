"""Slot leases between relays (fair share, takeover, lapse) and the PostgreSQL NOTIFY wake-up."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest
from sqlalchemy import create_engine, text

from engine.codec import encode
from engine.events import DomainEvent
from engine.modes import Mode
from engine.retry import RetryPolicy
from outbox import migrate
from outbox.claim import create_relay_engine
from outbox.leases import Leases, fair_share
from outbox.notify import Doorbell, NotifyListener, install_notify_trigger
from outbox.table import metadata
from outbox.writer import write

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

pytestmark = pytest.mark.anyio

SLOTS = 16
#: Long enough for the renewals above the sleep to finish within it on a slow, shared machine
#: (a renewal is valid for SAFE_SHARE of it: 0.6 s left 0.48 s and failed once in CI).
LEASE_SECONDS = 3.0


class PingSent(DomainEvent, name="tests.leases.PingSent", version=1):
    """An event for wake-up tests."""


def test_fair_share_splits_every_slot() -> None:
    """Shares add up to the slot count and differ by at most one, whoever asks."""
    members = ["a", "b", "c"]
    shares = [fair_share(64, members, member) for member in members]
    assert sum(shares) == 64
    assert max(shares) - min(shares) <= 1
    assert fair_share(64, ["a"], "b") == 32  # a relay not yet listed counts itself


async def test_relays_share_slots_and_take_over_a_dead_ones(relay_db: AsyncEngine) -> None:
    """A joining relay gets half once the first sheds its surplus; a relay that stops renewing loses its slots after the lease."""
    first = Leases(relay_db, owner="relay-a", slots=SLOTS, lease_seconds=LEASE_SECONDS)
    second = Leases(relay_db, owner="relay-b", slots=SLOTS, lease_seconds=LEASE_SECONDS)
    try:
        await first.setup()
        await first.refresh()
        assert len(first.owned) == SLOTS
        assert first.valid()
        await second.refresh()
        assert second.owned == frozenset()  # nothing free yet
        await first.refresh()
        assert len(first.surplus) == SLOTS // 2
        await first.release_surplus()
        await second.refresh()
        assert len(first.owned) == len(second.owned) == SLOTS // 2
        assert first.owned.isdisjoint(second.owned)
        await anyio.sleep(LEASE_SECONDS + 0.1)  # "first" dies: no renewal
        assert not first.valid()
        await second.refresh()
        assert len(second.owned) == SLOTS
        await first.refresh()  # a late renewal does not steal the slots back
        assert first.owned == frozenset()
        assert first.lost >= 1
        await second.release_all()
    finally:
        await first.aclose()
        await second.aclose()


async def test_released_slots_are_free_at_once(relay_db: AsyncEngine) -> None:
    """release_all frees every slot for the next relay without waiting for the lease to lapse."""
    leaving = Leases(relay_db, owner="leaving", slots=SLOTS, lease_seconds=30)
    arriving = Leases(relay_db, owner="arriving", slots=SLOTS, lease_seconds=30)
    try:
        await leaving.setup()
        await leaving.refresh()
        await leaving.release_all()
        await arriving.refresh()
        assert len(arriving.owned) == SLOTS
    finally:
        await leaving.aclose()
        await arriving.aclose()


@pytest.mark.postgres
async def test_notify_trigger_wakes_the_relay(postgres_url: str) -> None:
    """On PostgreSQL an outbox insert rings the relay's doorbell through LISTEN/NOTIFY, long before a poll would."""
    sync = create_engine(postgres_url)
    metadata.create_all(sync)
    assert install_notify_trigger(sync) is True
    engine = create_relay_engine(postgres_url)
    doorbell = Doorbell()
    listener = NotifyListener(engine, doorbell, RetryPolicy())
    try:
        async with anyio.create_task_group() as group:
            await group.start(listener.run)
            assert await doorbell.wait(0.5) is False  # nothing yet (and LISTEN takes effect)
            with sync.begin() as connection:
                write(
                    connection, [encode(PingSent(aggregate_id="p", source="orders"))], Mode.BROKER
                )
            assert await doorbell.wait(30) is True  # only a NOTIFY rings it: nothing polls here
            group.cancel_scope.cancel()
    finally:
        await engine.dispose()
        sync.dispose()


def test_trigger_install_is_a_no_op_on_sqlite(sqlite_url: str) -> None:
    """install_notify_trigger returns False and changes nothing on SQLite (the relay polls there)."""
    engine = create_engine(sqlite_url)
    metadata.create_all(engine)
    assert install_notify_trigger(engine) is False
    engine.dispose()


@pytest.mark.postgres
def test_migration_installs_and_removes_the_notify_trigger(postgres_url: str) -> None:
    """`eventseam db upgrade` (outbox.migrate) installs the NOTIFY trigger; downgrading past 0005 removes it."""
    query = text("SELECT count(*) FROM pg_trigger WHERE tgname = 'eventseam_outbox_notify'")
    engine = create_engine(postgres_url)
    try:
        migrate.upgrade(engine)
        with engine.connect() as connection:
            assert connection.execute(query).scalar_one() == 1
        migrate.downgrade(engine, "0004")
        with engine.connect() as connection:
            assert connection.execute(query).scalar_one() == 0
    finally:
        engine.dispose()
