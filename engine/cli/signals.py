"""Graceful stop on SIGTERM / SIGINT for the long-running commands (``relay``, ``worker``)."""

from __future__ import annotations

import math
import signal
from typing import TYPE_CHECKING

import anyio
import structlog

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio.abc import TaskStatus

log = structlog.get_logger(__name__)


async def stop_on_signals(
    stop: Callable[[], None],
    scope: anyio.CancelScope,
    event: str,
    *,
    grace: float = math.inf,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """The first SIGTERM or SIGINT logs ``event`` and calls ``stop``; a second logs ``event``
    + ``_now`` and cancels ``scope``, and so does ``grace`` seconds without one (logging
    ``event`` + ``_timeout``): the graceful stop is bounded.

    Start it with ``TaskGroup.start``: it reports started once the signals are caught, so a
    signal that arrives as soon as the command logged it was starting still stops it gracefully
    (with ``start_soon`` the default action, death by the signal, applied until it first ran).
    """
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            log.info(event, signal=signal.Signals(signum).name)
            stop()
            break
        with anyio.move_on_after(grace):
            async for signum in signals:
                log.warning(f"{event}_now", signal=signal.Signals(signum).name)
                scope.cancel()
                return
        log.warning(f"{event}_timeout", seconds=grace)
        scope.cancel()
