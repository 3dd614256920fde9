"""Retry policy: how many attempts, and how long to wait between them.

One small, pure value shared by the bus, the relay and the Kafka consumer runner::

    policy = RetryPolicy.from_settings(settings.bus)
    if policy.should_retry(attempt):
        await anyio.sleep(policy.delay(attempt))

Delays grow exponentially from ``initial`` by ``multiplier`` per attempt, are capped at
``maximum``, then jittered down by up to ``jitter`` of their value (``jitter=0`` is
deterministic, ``jitter=1`` is "full jitter"), so handlers failing together do not retry in step.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .errors import SettingsError

Random = Callable[[], float]
"""A source of floats in [0, 1): ``random.random`` or a fixed value in tests."""


class BackoffSettings(Protocol):
    """Any settings section with the three retry knobs (BusSettings, RelaySettings)."""

    @property
    def max_attempts(self) -> int: ...

    @property
    def backoff_initial(self) -> float: ...

    @property
    def backoff_max(self) -> float: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter, and a limit on attempts.

    ``max_attempts`` counts every attempt, the first one included: 3 means one try and two
    retries. Invalid values raise SettingsError at construction.
    """

    max_attempts: int = 3
    initial: float = 0.05
    maximum: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise SettingsError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if not 0 < self.initial <= self.maximum:
            raise SettingsError(
                f"need 0 < initial <= maximum, got {self.initial} and {self.maximum}"
            )
        if self.multiplier < 1:
            raise SettingsError(f"multiplier must be >= 1, got {self.multiplier}")
        if not 0 <= self.jitter <= 1:
            raise SettingsError(f"jitter must be within [0, 1], got {self.jitter}")

    @classmethod
    def from_settings(cls, settings: BackoffSettings, *, jitter: float = 0.5) -> RetryPolicy:
        """Build a policy from a settings section (an initial above the cap is lowered to it)."""
        return cls(
            max_attempts=settings.max_attempts,
            initial=min(settings.backoff_initial, settings.backoff_max),
            maximum=settings.backoff_max,
            jitter=jitter,
        )

    def should_retry(self, attempts: int) -> bool:
        """True when another attempt is allowed after ``attempts`` failed ones."""
        return attempts < self.max_attempts

    def base_delay(self, attempt: int) -> float:
        """The un-jittered delay, in seconds, after failed attempt number ``attempt`` (from 1)."""
        if attempt < 1:
            raise SettingsError(f"attempt numbers start at 1, got {attempt}")
        # Cap the exponent first: a huge attempt number must not overflow the float.
        exponent = min(attempt - 1, 1024)
        try:
            return min(self.maximum, self.initial * self.multiplier**exponent)
        except OverflowError:
            return self.maximum

    def delay(self, attempt: int, rng: Random = random.random) -> float:
        """Seconds to wait after failed attempt ``attempt`` (from 1), jittered with ``rng``.

        The result lies in ``[base * (1 - jitter), base]`` where ``base`` is ``base_delay``.
        """
        return self.base_delay(attempt) * (1.0 - self.jitter * rng())
