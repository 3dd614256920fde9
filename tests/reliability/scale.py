"""Sizes of the reliability scenarios: ``reduced`` (the default, in every pytest run) or ``full``.

``EVENTSEAM_RELIABILITY=full`` gives the issue's sizes (docs/RELIABILITY.md shows the command);
anything else, or unset, the reduced sizes CI runs in about a minute.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tests.reliability.figures import SCALE_ENV


@dataclass(frozen=True, slots=True)
class Scale:
    """Sizes of one scale of the suite."""

    name: str
    #: item 1: events written while the relay is SIGKILLed, and the kills
    relay_events: int
    relay_kills: int
    #: item 2: events per crash point run
    crash_events: int
    #: item 5: events consumed while the worker is SIGKILLed, and the kills
    worker_events: int
    worker_kills: int
    #: item 6: events, poison events among them, worker kills
    poison_events: int
    poison_count: int
    poison_kills: int
    #: item 8: events published while the flag flips, and the flips
    flip_events: int
    flips: int
    #: item 10: events with 3 relays and 2 workers, and the kills
    many_events: int
    many_kills: int
    #: aggregates the events are spread over
    aggregates: int


REDUCED = Scale(
    name="reduced",
    relay_events=2_000,
    relay_kills=3,
    crash_events=1_500,
    worker_events=1_500,
    worker_kills=2,
    poison_events=600,
    poison_count=3,
    poison_kills=2,
    flip_events=2_000,
    flips=5,
    many_events=2_000,
    many_kills=3,
    aggregates=200,
)

FULL = Scale(
    name="full",
    relay_events=100_000,
    relay_kills=25,
    crash_events=20_000,
    worker_events=50_000,
    worker_kills=10,
    poison_events=5_000,
    poison_count=10,
    poison_kills=5,
    flip_events=10_000,
    flips=5,
    many_events=50_000,
    many_kills=20,
    aggregates=1_000,
)


#: At the reduced scale (CI) these scenarios run on one database each, the other one at full
#: scale only (time); items 1 and 2 run on both. Test module -> database.
REDUCED_DATABASES = {
    "test_worker_kills": "sqlite",
    "test_poison": "postgresql",
    "test_flag_flips": "sqlite",
    "test_many_processes": "postgresql",
}


def current_scale() -> Scale:
    """The scale chosen by ``EVENTSEAM_RELIABILITY`` (``full``), else the reduced one."""
    return FULL if os.environ.get(SCALE_ENV, "").lower() == "full" else REDUCED
