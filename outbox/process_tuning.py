"""Interpreter settings for processes dedicated to eventseam (``relay``, ``worker``): the garbage
collector's, the C allocator's, and the worker's thread switch interval.

The relay allocates a few tracked containers per row (the claimed row, its header list) that die
young, while thousands of rows are in flight. With CPython's default first threshold (700) the
collector ran about 125 young collections per 100,000 rows, each walking the rows in flight and
promoting them, plus full collections over every object of the process (60-230 ms each on this
project's machines): 8-10 % of the relay's CPU (bench/relay_throughput.py, GC stats per run).
Freezing the objects alive at startup (modules, settings, connections) and raising the first
threshold to 10,000 leaves 1-2 young collections per 100,000 rows and no full pass over startup
objects. Cyclic garbage still gets collected, only later.

A worker (``eventseam worker``) freezes its startup heap too (full collections walking the
loaded application were about a third of its CPU in bench.consumer_runner) and raises the first
threshold to 50,000: a young collection walks every decoded event still waiting to be applied
(group commit keeps up to two thousand in flight), and at 10,000 they still came about once per
fetch. Measured 2026-11-28 (same-run A/B, 100,000 records, 5 repetitions): +14 % events per
CPU-second and +9 % events/s against 700, none at 10,000. Its consumer runner also pauses
automatic collection for each fetch and its decode (``collector_paused``), in any process that
runs one.

A worker also shortens the interpreter's thread switch interval from 5 ms to 1 ms
(``WORKER_SWITCH_INTERVAL``). Its handlers' transactions run in worker threads while the event
loop fetches and decodes: every time a transaction's thread comes back from the database (the
inbox claim, the COMMIT) it waits for the loop thread to give up the GIL, up to a whole switch
interval, and the database sits idle meanwhile. Measured 2026-11-28 (bench.consumer_runner
phases, same-run A/B, 50,000 records, 5 alternating repetitions, twice): +13 % and +12 %
events/s at 1 ms (every repetition faster), less at 0.5 ms and 0.2 ms (the switches themselves
cost), none at 2 ms. The relay keeps the default: its database and broker I/O run on the event
loop, with no thread to hand the GIL to.

Both keep freed memory for reuse (``keep_heap_pages``, glibc only). glibc serves an allocation
above its mmap threshold (128 KiB at first, raised as such blocks are freed) with fresh pages
from the kernel and returns them when it is freed, and it gives the top of the heap back once
more than twice that is free. A Kafka request or response is several such buffers (aiokafka
encodes a produce request in nested ``b"".join`` copies of every batch), so each one paid a page
fault per 4 KiB for every copy: encoding one produce request of six 200 KB batches took 1.95 ms,
0.23 ms with the thresholds raised to 16 and 32 MiB (``MMAP_THRESHOLD``, ``TRIM_THRESHOLD``).
Measured 2026-11-28 on bench.relay_throughput, every process of the run with the same settings
through glibc's environment variables: relay 78 k -> 96 k events/s and 1.06 -> 0.73 CPU seconds
per 100,000 rows, raw send_batch 163 k -> 278 k; bench.consumer_runner runner +8 %, raw
getmany +9 % events/s. The price: freed memory stays in the process (RSS) instead of going back
to the kernel at once, up to 32 MiB per allocator arena (glibc gives each busy thread one): the
relay's RSS stayed at 111 MiB over a 1,000,000-row drain, the worker's rose 117 -> 120 MiB.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import platform
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "MMAP_THRESHOLD",
    "RELAY_GEN0_THRESHOLD",
    "TRIM_THRESHOLD",
    "WORKER_GEN0_THRESHOLD",
    "WORKER_SWITCH_INTERVAL",
    "collector_paused",
    "freeze_startup_heap",
    "keep_heap_pages",
    "tune_for_relay",
    "tune_for_worker",
]

#: First-generation threshold of a relay process (CPython's default is 700).
RELAY_GEN0_THRESHOLD: Final = 10_000
#: First-generation threshold of a worker process.
WORKER_GEN0_THRESHOLD: Final = 50_000
#: Seconds between the interpreter's forced thread switches in a worker (CPython's default: 5 ms).
WORKER_SWITCH_INTERVAL: Final = 0.001
#: Allocations up to this many bytes come from the heap instead of fresh pages (glibc).
MMAP_THRESHOLD: Final = 16 * 1024 * 1024
#: Free bytes at the top of the heap before glibc gives them back to the kernel.
TRIM_THRESHOLD: Final = 32 * 1024 * 1024
#: mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3


def freeze_startup_heap() -> None:
    """Collect once, then move every object alive now to a generation the collector never scans.

    For a process that runs eventseam and little else, called once the application is loaded.
    """
    gc.collect()
    gc.freeze()


def keep_heap_pages() -> bool:
    """Raise glibc's mmap and trim thresholds (``MMAP_THRESHOLD``, ``TRIM_THRESHOLD``).

    True when set; False, changing nothing, on another C library (musl, macOS, Windows).
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def tune_for_relay() -> None:
    """Freeze the objects alive now, raise the first collector threshold (never lowers it) and
    keep freed heap pages (``keep_heap_pages``).

    It changes the collector and the allocator of the whole process: call it in a process that
    runs the relay and little else (the relay command does, once its Relay is built), not in a
    web worker.
    """
    _freeze_and_raise(RELAY_GEN0_THRESHOLD)
    keep_heap_pages()


def tune_for_worker() -> None:
    """``tune_for_relay`` with the worker's threshold, and the worker's thread switch interval
    (never lengthened): for ``eventseam worker``, once loaded."""
    _freeze_and_raise(WORKER_GEN0_THRESHOLD)
    keep_heap_pages()
    sys.setswitchinterval(min(sys.getswitchinterval(), WORKER_SWITCH_INTERVAL))


def _freeze_and_raise(gen0_threshold: int) -> None:
    freeze_startup_heap()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, gen0_threshold), gen1, gen2)


@contextmanager
def collector_paused() -> Iterator[None]:
    """Automatic garbage collection paused inside (if it was on): for one fetch and its decode.

    A fetched and decoded batch is a dozen tracked objects per record that stay alive until it
    is applied: collections triggered meanwhile (one per ~700 allocations) only promote them,
    and their number drives the older generations' collections. Paused, the batch costs one
    young collection (at the first allocation after) instead of about ten. Bounded: one fetch
    (at most its wait, the fetch loop's poll) and one batch's decode; other threads allocating
    meanwhile are collected after it. A process that turns the collector off for longer must
    not rely on the runner leaving it off.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
