"""Slot leases: which relay process sends which aggregates.

Each relay renews its membership and its leases every ``lease_seconds / 3``. Live members split
the slots evenly (members sorted by id; the first ``slots % n`` take one more), so a relay that
joins gets its fair share as the others shed their surplus, and a relay that dies has its slots
taken over once its leases expire (``lease_seconds`` after its last renewal). Lease times come
from the database clock.

A relay that cannot renew stops sending at ``renewed_at + 0.8 * lease_seconds`` on its own
monotonic clock, which is before the database lets another relay take its slots over. Surplus
slots are not released here: the relay first lets its in-flight batches land, then calls
``release_surplus`` (otherwise the next owner could send newer rows before older ones land).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from sqlalchemy import Double, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from .claim import Link
from .lease_table import relay_lease, relay_member

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.sql.compiler import SQLCompiler

    from engine.retry import RetryPolicy

log = structlog.get_logger(__name__)

#: Share of the lease a relay may use before it stops sending without a renewal.
SAFE_SHARE = 0.8


class epoch_now(FunctionElement[float]):
    """The database clock as epoch seconds (float)."""

    type = Double()
    inherit_cache = True


@compiles(epoch_now)
def _epoch_now_default(element: epoch_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXTRACT(EPOCH FROM CURRENT_TIMESTAMP)"


@compiles(epoch_now, "postgresql")
def _epoch_now_postgresql(element: epoch_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXTRACT(EPOCH FROM clock_timestamp())::float8"


@compiles(epoch_now, "sqlite")
def _epoch_now_sqlite(element: epoch_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "((julianday('now') - 2440587.5) * 86400.0)"


def fair_share(slots: int, members: list[str], owner: str) -> int:
    """How many of ``slots`` ``owner`` should hold among the live ``members`` (sorted ids)."""
    if owner not in members:
        members = sorted([*members, owner])
    count, index = len(members), members.index(owner)
    return slots // count + (1 if index < slots % count else 0)


class Leases:
    """The slot leases of one relay process.

    ``owned`` is the set of slots this relay may send; ``version`` changes whenever it changes and
    ``lost`` whenever slots leave it. ``valid()`` is False once a renewal is overdue.
    """

    def __init__(
        self, engine: AsyncEngine, *, owner: str, slots: int, lease_seconds: float
    ) -> None:
        self._engine = engine
        self._link = Link(engine)
        self._postgres = engine.dialect.name == "postgresql"
        self.owner, self.slots, self.lease_seconds = owner, slots, lease_seconds
        self.owned: frozenset[int] = frozenset()
        self.surplus: frozenset[int] = frozenset()
        self.version = self.lost = 0
        self._valid_until = 0.0
        self.changed = anyio.Event()

    def valid(self) -> bool:
        """True while the last renewal covers this moment (send only then)."""
        return time.monotonic() < self._valid_until

    def _set_owned(self, owned: frozenset[int], *, lost: bool) -> None:
        if owned == self.owned:
            return
        self.owned, self.version = owned, self.version + 1
        self.surplus = self.surplus & owned
        if lost:
            self.lost += 1
        self.changed.set()
        self.changed = anyio.Event()
        log.info("relay.slots_changed", owner=self.owner, slots=len(owned))

    async def setup(self) -> None:
        """Insert the missing slot rows (free leases)."""
        existing = {row[0] for row in await self._link.execute(select(relay_lease.c.slot))}
        missing = [
            {"slot": slot, "owner": None, "expires_at": 0.0}
            for slot in range(self.slots)
            if slot not in existing
        ]
        if missing:
            dialect = postgresql if self._postgres else sqlite
            statement = dialect.insert(relay_lease).on_conflict_do_nothing(index_elements=["slot"])
            await self._link.execute(statement, missing)

    async def refresh(self) -> None:
        """One renewal: heartbeat, renew held slots, then take or give up slots toward the fair share."""
        started = time.monotonic()
        members = await self._heartbeat()
        renewed = await self._renew()
        self._valid_until = started + SAFE_SHARE * self.lease_seconds
        if renewed != self.owned:
            log.warning("relay.slots_lost", owner=self.owner, lost=sorted(self.owned - renewed))
            self._set_owned(renewed, lost=True)
        target = fair_share(self.slots, members, self.owner)
        if len(self.owned) < target:
            self._set_owned(self.owned | await self._acquire(target - len(self.owned)), lost=False)
        elif len(self.owned) > target:
            self.surplus = frozenset(sorted(self.owned)[target:])
            self.changed.set()
            self.changed = anyio.Event()

    async def _heartbeat(self) -> list[str]:
        expires = epoch_now() + self.lease_seconds
        dialect = postgresql if self._postgres else sqlite
        upsert = dialect.insert(relay_member).values(owner=self.owner, expires_at=expires)
        upsert = upsert.on_conflict_do_update(
            index_elements=["owner"], set_={"expires_at": expires}
        )
        await self._link.execute(upsert)
        await self._link.execute(
            delete(relay_member).where(
                relay_member.c.expires_at < epoch_now() - 10 * self.lease_seconds
            )
        )
        live = (
            select(relay_member.c.owner)
            .where(relay_member.c.expires_at > epoch_now())
            .order_by(relay_member.c.owner)
        )
        return [row[0] for row in await self._link.execute(live)]

    async def _renew(self) -> frozenset[int]:
        if not self.owned:
            return frozenset()
        statement = (
            update(relay_lease)
            .where(relay_lease.c.owner == self.owner, relay_lease.c.slot.in_(sorted(self.owned)))
            .values(expires_at=epoch_now() + self.lease_seconds)
            .returning(relay_lease.c.slot)
        )
        return frozenset(row[0] for row in await self._link.execute(statement))

    async def _acquire(self, count: int) -> frozenset[int]:
        free = or_(relay_lease.c.owner.is_(None), relay_lease.c.expires_at < epoch_now())
        candidates = select(relay_lease.c.slot).where(free, relay_lease.c.slot < self.slots)
        candidates = candidates.order_by(relay_lease.c.slot).limit(count)
        if self._postgres:
            candidates = candidates.with_for_update(skip_locked=True)
        statement = (
            update(relay_lease)
            .where(relay_lease.c.slot.in_(candidates.scalar_subquery()), free)
            .values(owner=self.owner, expires_at=epoch_now() + self.lease_seconds)
            .returning(relay_lease.c.slot)
        )
        return frozenset(row[0] for row in await self._link.execute(statement))

    async def release(self, slots: frozenset[int]) -> None:
        """Give ``slots`` up at once (stop sending them first)."""
        if slots:
            statement = (
                update(relay_lease)
                .where(relay_lease.c.owner == self.owner, relay_lease.c.slot.in_(sorted(slots)))
                .values(owner=None, expires_at=0.0)
            )
            await self._link.execute(statement)
        self._set_owned(self.owned - slots, lost=True)

    async def release_surplus(self) -> None:
        """Release the slots above the fair share (call once in-flight batches have landed)."""
        surplus, self.surplus = self.surplus, frozenset()
        await self.release(surplus)

    async def release_all(self) -> None:
        """Release every slot and leave the membership (graceful shutdown)."""
        self._valid_until = 0.0
        await self.release(self.owned)
        await self._link.execute(delete(relay_member).where(relay_member.c.owner == self.owner))

    async def run(
        self,
        policy: RetryPolicy,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Renew every ``lease_seconds / 3`` until cancelled; reports started after the first renewal."""
        failures = 0
        started = False
        while True:
            try:
                await self.refresh()
                failures, wait = 0, self.lease_seconds / 3
            except (SQLAlchemyError, OSError) as exc:
                failures += 1
                wait = min(policy.delay(failures), self.lease_seconds / 3)
                log.warning(
                    "relay.lease_renewal_failed", owner=self.owner, error=str(exc), attempt=failures
                )
            if not started and failures == 0:
                started = True
                task_status.started()
            await anyio.sleep(wait)

    async def aclose(self) -> None:
        """Close the connection."""
        await self._link.aclose()
