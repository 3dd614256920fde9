"""ApplyQueue: the group-commit queue between the runner's fetch loop and its apply loop."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from engine.apply_queue import ApplyQueue, Waiting

pytestmark = pytest.mark.anyio


def batch(events: int, size: int = 10, generation: int = 0) -> Waiting:
    """A decoded batch of ``events`` stand-in events and ``size`` bytes."""
    items: list[Any] = list(range(events))
    return Waiting(generation, items, items, size)


async def test_take_gives_every_waiting_batch_within_the_caps() -> None:
    """take returns the oldest batches, as many as fit the record cap (always at least one)."""
    queue = ApplyQueue(max_records=5, max_bytes=1_000)
    first, second, third = batch(3), batch(2), batch(1)
    for item in (first, second, third):
        queue.put(item)
    assert await queue.take() == [first, second]
    assert await queue.take() == [third]
    oversized = batch(9)
    queue.put(oversized)
    assert await queue.take() == [oversized]
    assert (queue.records, queue.bytes) == (0, 0)


async def test_take_respects_the_byte_cap() -> None:
    """Batches beyond max_bytes wait for the next take."""
    queue = ApplyQueue(max_records=100, max_bytes=25)
    first, second = batch(1, size=20), batch(1, size=20)
    queue.put(first)
    queue.put(second)
    assert await queue.take() == [first]
    assert await queue.take() == [second]


async def test_room_blocks_while_full_and_take_frees_it() -> None:
    """room returns at once below the caps and waits while a cap is reached."""
    queue = ApplyQueue(max_records=2, max_bytes=1_000)
    queue.put(batch(1))
    with anyio.fail_after(1):
        await queue.room()
    queue.put(batch(1))
    assert queue.full()
    with anyio.move_on_after(0.05) as waited:
        await queue.room()
    assert waited.cancelled_caught
    async with anyio.create_task_group() as group:
        group.start_soon(queue.room)
        await anyio.sleep(0.01)
        assert await queue.take() is not None
    assert not queue.full()


async def test_take_waits_for_a_batch_and_close_ends_it() -> None:
    """take waits for put; after close it returns None, batches waiting or not."""
    queue = ApplyQueue(max_records=10, max_bytes=1_000)
    taken: list[Any] = []

    async def taker() -> None:
        taken.append(await queue.take())

    async with anyio.create_task_group() as group:
        group.start_soon(taker)
        await anyio.sleep(0.01)
        assert taken == []
        queue.put(batch(1))
    assert len(taken[0]) == 1
    queue.put(batch(1))
    queue.close()
    assert await queue.take() is None
    with anyio.fail_after(1):
        queue.put(batch(5))
        await queue.room()  # closed: never blocks


async def test_clear_drops_the_waiting_batches() -> None:
    """clear (a revoke) empties the queue and frees room."""
    queue = ApplyQueue(max_records=2, max_bytes=1_000)
    queue.put(batch(2))
    assert queue.full()
    queue.clear()
    assert (queue.records, queue.bytes, queue.full()) == (0, 0, False)
    fresh = batch(1, generation=1)
    queue.put(fresh)
    assert await queue.take() == [fresh]


def test_caps_must_be_positive() -> None:
    """A cap below 1 is refused."""
    with pytest.raises(ValueError, match="at least 1"):
        ApplyQueue(max_records=0, max_bytes=1)
