"""outbox.process_tuning.tune_for_relay/worker: freeze startup objects and raise the first threshold
only; the worker shortens the thread switch interval only."""

from __future__ import annotations

import gc
import sys
from typing import TYPE_CHECKING

import pytest

from outbox.process_tuning import (
    RELAY_GEN0_THRESHOLD,
    WORKER_GEN0_THRESHOLD,
    WORKER_SWITCH_INTERVAL,
    tune_for_relay,
    tune_for_worker,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds, interval = gc.get_threshold(), sys.getswitchinterval()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("restored_collector")
@pytest.mark.parametrize(
    ("tune", "threshold"),
    [(tune_for_relay, RELAY_GEN0_THRESHOLD), (tune_for_worker, WORKER_GEN0_THRESHOLD)],
)
def test_freezes_and_raises_the_first_threshold(tune: Callable[[], None], threshold: int) -> None:
    gc.set_threshold(700, 10, 10)
    tune()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (threshold, 10, 10)


@pytest.mark.usefixtures("restored_collector")
def test_never_lowers_a_higher_threshold() -> None:
    gc.set_threshold(80_000, 20, 30)
    tune_for_relay()
    tune_for_worker()
    assert gc.get_threshold() == (80_000, 20, 30)


@pytest.mark.usefixtures("restored_collector")
def test_only_the_worker_shortens_the_switch_interval() -> None:
    sys.setswitchinterval(0.005)
    tune_for_relay()
    assert sys.getswitchinterval() == pytest.approx(0.005, abs=2e-6)
    tune_for_worker()
    assert sys.getswitchinterval() == pytest.approx(WORKER_SWITCH_INTERVAL, abs=2e-6)


@pytest.mark.usefixtures("restored_collector")
def test_the_worker_never_lengthens_a_shorter_switch_interval() -> None:
    sys.setswitchinterval(0.0005)
    tune_for_worker()
    assert sys.getswitchinterval() == pytest.approx(0.0005, abs=2e-6)  # kept in microseconds
