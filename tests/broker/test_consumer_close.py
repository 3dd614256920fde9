"""Closing a consumer whose group join the broker holds (the worker's stop during a rebalance).

The broker answers a JoinGroup only once every known member rejoined or its session expired. A
member that is stopped (SIGSTOP: alive to the broker, silent) holds the rebalance for its whole
session, and aiokafka's stop waited for the new member's JoinGroup all that while (37 s with
30 s sessions): a worker told to stop while it joined its group did not stop. (The bundled broker
also delays a new group's first join by half a session: the member here has short sessions.)
"""

from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING

import anyio
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from engine.consumer import ABANDON_JOIN_AFTER, KafkaConsumer, Partition
from engine.settings import ConsumerSettings, KafkaSettings
from tests.kafka_broker import unique_prefix

if TYPE_CHECKING:
    from outbox.bundled_broker import BundledBroker

pytestmark = [pytest.mark.anyio, pytest.mark.broker]

#: The stopped member's session: the broker holds the other member's join until it expires.
MEMBER_SESSION_MS = 12_000

#: A plain aiokafka member of the group: prints "assigned" once it holds partitions.
MEMBER = """
import asyncio, sys
from aiokafka import AIOKafkaConsumer

async def main():
    consumer = AIOKafkaConsumer(
        sys.argv[2], bootstrap_servers=sys.argv[1], group_id=sys.argv[3],
        session_timeout_ms=int(sys.argv[4]), heartbeat_interval_ms=1000,
    )
    await consumer.start()
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=200)
    print("assigned", flush=True)
    while True:
        await consumer.getmany(timeout_ms=200)

asyncio.run(main())
"""


class JoinWatch:
    """Rebalance hooks that note when the join began and whether it ended."""

    def __init__(self) -> None:
        self.joining = anyio.Event()
        self.assigned: set[Partition] | None = None

    async def partitions_revoked(self, partitions: set[Partition]) -> None:
        self.joining.set()  # aiokafka calls this before it sends JoinGroup

    async def partitions_assigned(self, partitions: set[Partition]) -> None:
        self.assigned = partitions


async def test_a_consumer_closes_promptly_while_the_broker_holds_its_group_join(
    kafka_broker: BundledBroker,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topic, group = f"{unique_prefix()}close", f"{unique_prefix()}group"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()
    command = [sys.executable, "-c", MEMBER, bootstrap, topic, group, str(MEMBER_SESSION_MS)]
    async with await anyio.open_process(command, stderr=None) as member:
        try:
            assert member.stdout is not None
            output = b""
            with anyio.fail_after(60):
                while b"assigned" not in output:
                    output += await member.stdout.receive()
            member.send_signal(signal.SIGSTOP)  # in the group, silent: the next join waits for it
            await close_while_joining(bootstrap, topic, group)
        finally:
            member.kill()


async def close_while_joining(bootstrap: str, topic: str, group: str) -> None:
    """Start a consumer of ``group``, close it once its JoinGroup is out; fail if close hangs."""
    consumer = KafkaConsumer(
        KafkaSettings(bootstrap_servers=bootstrap),
        ConsumerSettings(),
        group_id=group,
        topics=[topic],
        client_id="closing",
    )
    watch = JoinWatch()
    await consumer.start(watch)
    with anyio.fail_after(10):
        await watch.joining.wait()
    await anyio.sleep(0.5)  # the JoinGroup request is out
    # A hang bound between the two outcomes: ~ABANDON_JOIN_AFTER (1 s) with the fix, the rest
    # of the stopped member's session (about 10 s) without it.
    with anyio.fail_after(ABANDON_JOIN_AFTER + 5):
        await consumer.aclose()
    assert watch.assigned is None, "the join completed: the broker did not hold it"
