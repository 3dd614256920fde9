"""engine.cli.signals: the long-running commands' graceful stop on SIGTERM / SIGINT."""

from __future__ import annotations

import functools
import os
import signal

import anyio
import pytest

from engine.cli.signals import stop_on_signals

pytestmark = pytest.mark.anyio


async def test_a_signal_right_after_start_stops_gracefully_then_a_second_one_cancels() -> None:
    """Once ``start`` returned the signals are caught: the first calls stop, the second cancels."""
    stopped = anyio.Event()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            await group.start(stop_on_signals, stopped.set, group.cancel_scope, "test_stopping")
            os.kill(os.getpid(), signal.SIGTERM)  # at once: the default action would kill pytest
            await stopped.wait()
            os.kill(os.getpid(), signal.SIGINT)
            await anyio.sleep_forever()  # cancelled by the second signal
    assert group.cancel_scope.cancel_called


async def test_a_graceful_stop_that_outlasts_its_grace_is_cut_short() -> None:
    """``grace`` seconds after the first signal without a second one, the scope is cancelled
    all the same (a stop that hangs, here one that does nothing, cannot keep the process up)."""
    asked = anyio.Event()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            await group.start(
                functools.partial(stop_on_signals, grace=0.2),
                asked.set,
                group.cancel_scope,
                "test_stopping",
            )
            os.kill(os.getpid(), signal.SIGTERM)
            await asked.wait()
            await anyio.sleep_forever()  # the stop asked for never comes: the grace ends it
    assert group.cancel_scope.cancel_called
