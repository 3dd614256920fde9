"""RetryPolicy: exponential backoff with a cap, bounded jitter, attempt limits, validation."""

from __future__ import annotations

import math

import pytest

from engine.errors import SettingsError
from engine.retry import RetryPolicy
from engine.settings import BusSettings, RelaySettings


def test_delay_grows_exponentially_up_to_the_cap() -> None:
    """Without jitter the delay doubles from ``initial`` per attempt and stops at ``maximum``."""
    policy = RetryPolicy(max_attempts=10, initial=0.1, maximum=1.0, jitter=0)
    delays = [policy.delay(attempt) for attempt in range(1, 7)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_multiplier_sets_the_growth_rate() -> None:
    """A multiplier of 3 triples the delay per attempt."""
    policy = RetryPolicy(initial=1.0, maximum=100.0, multiplier=3.0, jitter=0)
    assert [policy.delay(n) for n in (1, 2, 3)] == pytest.approx([1.0, 3.0, 9.0])


@pytest.mark.parametrize("draw", [0.0, 0.25, 0.5, 0.999999])
def test_jitter_keeps_the_delay_within_its_band(draw: float) -> None:
    """A jittered delay lies in [base * (1 - jitter), base] for every random draw."""
    policy = RetryPolicy(initial=0.4, maximum=10.0, jitter=0.5)
    delay = policy.delay(2, rng=lambda: draw)
    assert 0.4 <= delay <= 0.8
    assert delay == pytest.approx(0.8 * (1 - 0.5 * draw))


def test_full_jitter_can_reach_zero_and_real_randomness_stays_in_band() -> None:
    """jitter=1 spans [0, base]; the default random source never leaves the band."""
    policy = RetryPolicy(initial=1.0, maximum=1.0, jitter=1.0)
    assert policy.delay(1, rng=lambda: 0.0) == 1.0
    assert policy.delay(1, rng=lambda: 1.0) == 0.0
    assert all(0.0 <= policy.delay(1) <= 1.0 for _ in range(1000))


def test_should_retry_counts_every_attempt() -> None:
    """max_attempts=3 allows retries after the first and second failure only."""
    policy = RetryPolicy(max_attempts=3)
    assert [policy.should_retry(n) for n in (1, 2, 3, 4)] == [True, True, False, False]
    assert not RetryPolicy(max_attempts=1).should_retry(1)


def test_huge_attempt_numbers_do_not_overflow() -> None:
    """A very large attempt number yields the cap instead of an OverflowError."""
    policy = RetryPolicy(initial=0.5, maximum=30.0, multiplier=10.0, jitter=0)
    assert policy.delay(10_000) == 30.0
    assert math.isfinite(policy.base_delay(10**9))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"initial": 0.0},
        {"initial": 2.0, "maximum": 1.0},
        {"multiplier": 0.5},
        {"jitter": -0.1},
        {"jitter": 1.5},
    ],
)
def test_invalid_policies_are_rejected(kwargs: dict[str, float]) -> None:
    """Out-of-range values raise SettingsError at construction."""
    with pytest.raises(SettingsError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_attempt_numbers_start_at_one() -> None:
    """Asking for the delay after attempt 0 is a programming error."""
    with pytest.raises(SettingsError):
        RetryPolicy().delay(0)


def test_from_settings_reads_bus_and_relay_sections() -> None:
    """from_settings takes the attempts and backoff bounds of any settings section."""
    bus = RetryPolicy.from_settings(
        BusSettings(max_attempts=7, backoff_initial=0.2, backoff_max=3.0)
    )
    assert (bus.max_attempts, bus.initial, bus.maximum) == (7, 0.2, 3.0)
    relay = RetryPolicy.from_settings(RelaySettings(), jitter=0)
    assert (relay.max_attempts, relay.initial, relay.maximum, relay.jitter) == (10, 0.2, 30.0, 0)


def test_from_settings_lowers_an_initial_delay_above_the_cap() -> None:
    """Settings whose initial backoff exceeds the cap still make a valid policy."""
    policy = RetryPolicy.from_settings(BusSettings(backoff_initial=10.0, backoff_max=1.0))
    assert policy.delay(1, rng=lambda: 0.0) == 1.0
