"""Several `eventseam relay` processes on one PostgreSQL database: order, takeover, clean shutdown."""

from __future__ import annotations

import json
import signal
from collections import defaultdict
from typing import TYPE_CHECKING

import anyio
import pytest
from sqlalchemy import Engine, select

from outbox.lease_table import relay_lease, relay_member
from outbox.table import Status
from tests.kafka_broker import (
    item,
    outbox_rows,
    read_topic,
    relay_env,
    slot_owners,
    spawn_relay,
    stop_process,
    wait_for,
    write_events,
)

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

    from outbox.bundled_broker import BundledBroker

pytestmark = [pytest.mark.anyio, pytest.mark.broker, pytest.mark.postgres]

SLOTS = 64


def url_of(engine: Engine) -> str:
    """The engine's URL with its password (the relays connect on their own)."""
    return engine.url.render_as_string(hide_password=False)


def holders(engine: Engine) -> dict[str, int]:
    """Slots held per live owner (free slots left out)."""
    return {owner: count for owner, count in slot_owners(engine).items() if owner is not None}


def fair(engine: Engine, relays: int) -> bool:
    """True when ``relays`` owners hold every slot in shares that differ by at most one."""
    counts = sorted(holders(engine).values())
    return len(counts) == relays and sum(counts) == SLOTS and counts[-1] - counts[0] <= 1


def stop_all(processes: list[subprocess.Popen[bytes]]) -> list[int]:
    """SIGTERM every process; their exit codes."""
    return [stop_process(process) for process in processes]


async def test_three_relay_processes_keep_per_aggregate_order(
    postgres_outbox: Engine, kafka_broker: BundledBroker, topic_prefix: str, tmp_path: Path
) -> None:
    """Relay processes joining one by one take slots over from each other while rows flow, yet each aggregate's events arrive once, in order."""
    env = relay_env(url_of(postgres_outbox), kafka_broker.bootstrap_servers, topic_prefix)
    processes: list[subprocess.Popen[bytes]] = []
    aggregates, rounds = 150, 12
    try:
        for round_number in range(rounds):
            if round_number % 4 == 0:  # a new relay joins: slots move while rows are pending
                processes.append(spawn_relay(env, tmp_path, f"relay-{len(processes)}"))
            events = [item(f"agg-{a:03}", round_number * 1000 + a) for a in range(aggregates)]
            write_events(postgres_outbox, events[: aggregates // 2])
            write_events(postgres_outbox, events[aggregates // 2 :])
            await anyio.sleep(0.4)
        await wait_for(
            lambda: fair(postgres_outbox, 3), timeout=60, message="fair share among 3 relays"
        )
        await wait_for(
            lambda: not outbox_rows(postgres_outbox), timeout=60, message="outbox drained"
        )
    finally:
        codes = stop_all(processes)
    assert codes == [0, 0, 0]
    first_slots = [
        line
        for line in (tmp_path / "relay-0.log").read_text().splitlines()
        if "relay.slots_changed" in line
    ]
    assert len(first_slots) >= 3, "the first relay should have shed slots to the others"
    records = await read_topic(
        kafka_broker.bootstrap_servers, f"{topic_prefix}orders", expected=aggregates * rounds
    )
    numbers: dict[bytes | None, list[int]] = defaultdict(list)
    for record in records:
        numbers[record.key].append(json.loads(record.value)["n"])
    assert len(numbers) == aggregates
    for key, values in numbers.items():
        assert values == sorted(values), f"{key!r} out of order: {values}"
        assert len(values) == rounds, f"{key!r}: {values}"


async def test_dead_relay_slots_are_taken_over(
    postgres_outbox: Engine, kafka_broker: BundledBroker, topic_prefix: str, tmp_path: Path
) -> None:
    """When a relay process dies without releasing its leases, the survivor takes its slots once they expire and relays their rows."""
    env = relay_env(url_of(postgres_outbox), kafka_broker.bootstrap_servers, topic_prefix)
    doomed, survivor = spawn_relay(env, tmp_path, "doomed"), spawn_relay(env, tmp_path, "survivor")
    try:
        await wait_for(
            lambda: fair(postgres_outbox, 2), timeout=60, message="fair share among 2 relays"
        )
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        write_events(postgres_outbox, [item(f"late-{n}", n) for n in range(200)])
        await wait_for(
            lambda: fair(postgres_outbox, 1), timeout=60, message="survivor holds every slot"
        )
        await wait_for(
            lambda: not outbox_rows(postgres_outbox), timeout=60, message="outbox drained"
        )
    finally:
        codes = stop_all([survivor])
    assert codes == [0]
    records = await read_topic(
        kafka_broker.bootstrap_servers, f"{topic_prefix}orders", expected=200
    )
    assert sorted({json.loads(record.value)["n"] for record in records}) == list(range(200))


async def test_sigterm_stops_a_relay_cleanly(
    postgres_outbox: Engine, kafka_broker: BundledBroker, topic_prefix: str, tmp_path: Path
) -> None:
    """SIGTERM mid-backlog: the relay exits 0, every row is pending or fully published (and on the topic), and its leases are released."""
    for start in range(0, 30_000, 3_000):
        write_events(
            postgres_outbox, [item(f"bulk-{n % 97}", n) for n in range(start, start + 3_000)]
        )
    env = relay_env(
        url_of(postgres_outbox), kafka_broker.bootstrap_servers, topic_prefix, retention_seconds=600
    )
    relay = spawn_relay(env, tmp_path, "relay")

    def published() -> int:
        return sum(1 for row in outbox_rows(postgres_outbox) if row.status == Status.PUBLISHED)

    try:
        await wait_for(lambda: published() >= 500, timeout=60, message="relay is publishing")
    finally:
        code = stop_process(relay, timeout=30)
    assert code == 0, (tmp_path / "relay.log").read_text()
    rows = outbox_rows(postgres_outbox)
    assert {row.status for row in rows} <= {Status.PENDING, Status.PUBLISHED}
    assert all(row.published_at is not None for row in rows if row.status == Status.PUBLISHED)
    assert all(row.published_at is None for row in rows if row.status == Status.PENDING)
    published_ids = {str(row.id).encode() for row in rows if row.status == Status.PUBLISHED}
    records = await read_topic(
        kafka_broker.bootstrap_servers, f"{topic_prefix}orders", expected=len(published_ids)
    )
    assert published_ids <= {record.header("ce_id") for record in records}
    with postgres_outbox.connect() as connection:
        assert (
            connection.execute(
                select(relay_lease.c.owner).where(relay_lease.c.owner.is_not(None))
            ).all()
            == []
        )
        assert connection.execute(select(relay_member.c.owner)).all() == []
