"""outbox.notify.Doorbell: rings are consumed by wait, and rung_at is the first ring's time."""

from __future__ import annotations

import time

import anyio
import pytest

from outbox.notify import Doorbell


@pytest.mark.anyio
async def test_rung_at_is_the_first_ring_of_a_wake_up() -> None:
    """Later rings before the wait do not move rung_at; the next wake-up gets its own time."""
    doorbell = Doorbell()
    before = time.monotonic()
    doorbell.ring()
    first = doorbell.rung_at
    await anyio.sleep(0.01)
    doorbell.ring()
    assert before <= first == doorbell.rung_at
    assert await doorbell.wait(1.0) is True
    assert await doorbell.wait(0.0) is False  # consumed
    doorbell.ring()
    assert doorbell.rung_at > first
    assert await doorbell.wait(1.0) is True
