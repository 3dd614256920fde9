"""Test-only crash points of the relay and the consumer runner (tests/reliability, items 2 and 6).

``EVENTSEAM_TEST_CRASH_AT="<point>@<n>"`` makes the process SIGKILL itself the ``n``-th
time it reaches ``<point>`` (``@<n>`` defaults to 1):

    before_send   a batch is built, nothing of it handed to the producer yet
    after_send    the batch is handed to the producer, its acknowledgement not awaited yet
    after_ack     the broker acknowledged the batch, its rows not queued for marking yet
    after_mark    a mark statement committed (rows deleted or marked published)

and the consumer runner (engine.handler_worker, item 6) the ``n``-th time it reaches:

    after_dead_letter_ack   the broker acknowledged a dead-letter record, not marked sent yet
    after_dead_letter_mark  the dead-letter record is marked sent, its offset not committed

Never set it in production. Unset (the normal case) it costs one falsy module-constant test at
each call site: ``if CRASH_AT: crash_point("after_ack")``.
"""

from __future__ import annotations

import os
import signal

POINTS = ("before_send", "after_send", "after_ack", "after_mark")
#: The consumer runner's points (not in POINTS: tests/reliability/test_crash_points.py runs a
#: relay at each of POINTS).
CONSUMER_POINTS = ("after_dead_letter_ack", "after_dead_letter_mark")

#: The raw setting, read once at import ("" when unset).
CRASH_AT = os.environ.get("EVENTSEAM_TEST_CRASH_AT", "")
_point, _, _count = CRASH_AT.partition("@")
_remaining = {_point: int(_count or "1")} if CRASH_AT else {}


def crash_point(point: str) -> None:
    """SIGKILL this process when ``point`` is the configured crash point, reached for the n-th time."""
    if point in _remaining:
        _remaining[point] -= 1
        if _remaining[point] <= 0:
            os.kill(os.getpid(), signal.SIGKILL)
