"""outbox.gc_tuning.tune_for_relay: freezes startup objects and raises the first threshold only."""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING

import pytest

from outbox.gc_tuning import RELAY_GEN0_THRESHOLD, tune_for_relay

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_collector")
def test_freezes_and_raises_the_first_threshold() -> None:
    gc.set_threshold(700, 10, 10)
    tune_for_relay()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (RELAY_GEN0_THRESHOLD, 10, 10)


@pytest.mark.usefixtures("restored_collector")
def test_never_lowers_a_higher_threshold() -> None:
    gc.set_threshold(50_000, 20, 30)
    tune_for_relay()
    assert gc.get_threshold() == (50_000, 20, 30)
