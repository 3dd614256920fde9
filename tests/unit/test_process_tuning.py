"""outbox.process_tuning.tune_for_relay/worker: freeze startup objects and raise the first threshold
only; the worker shortens the thread switch interval only; both keep freed heap pages (glibc)."""

from __future__ import annotations

import gc
import platform
import subprocess
import sys
import textwrap
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


#: Encodes one produce request of six 200 KB batches 20 times; prints the page faults it took
#: before and after keep_heap_pages() (and what keep_heap_pages returned).
PAGE_FAULTS = textwrap.dedent(
    """
    import resource
    from aiokafka.protocol.produce import ProduceRequest_v7
    from outbox.process_tuning import keep_heap_pages

    def faults():
        batches = [bytearray(200_000) for _ in range(6)]
        request = ProduceRequest_v7(None, -1, 30000, [("t", list(enumerate(batches)))])
        request.encode()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            request.encode()
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    untuned = faults()
    kept = keep_heap_pages()
    print(untuned, kept, faults())
    """
)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")
def test_keeping_heap_pages_stops_the_page_faults_of_large_kafka_requests() -> None:
    """Raised glibc thresholds: re-encoding a large produce request reuses freed pages.

    Run in a process of its own (the settings are process-wide and cannot be undone).
    """
    out = subprocess.run(
        [sys.executable, "-c", PAGE_FAULTS], capture_output=True, text=True, check=True
    ).stdout
    untuned, kept, tuned = out.split()
    assert kept == "True"
    assert int(untuned) > 1_000  # a fault per 4 KiB page of every copy, request after request
    assert int(tuned) < int(untuned) // 20
