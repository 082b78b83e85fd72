"""Make ``fork()`` cheap on a big heap by backing it with transparent huge pages.

The pause of a fork snapshot is the kernel copying the parent's page tables: one entry per
4 KiB page, about 14-25 ms for a 1M-order book here. ``MADV_COLLAPSE`` (Linux >= 6.1) rewrites
the heap as 2 MiB pages, 512 times fewer entries, which brings that pause to a few ms. It runs
in a worker thread (``madvise`` releases the GIL) before the fork, so trading continues while
the kernel works. Where it is unsupported the node simply forks without it.

The kernel's copy competes for the CPU with the thread that trades: on a server pinned to one
CPU, a collapse at normal priority took half of it for over a second and queued every order
behind it. ``idle=True`` runs it in the CPU's idle time only (``bastion.node.idle``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys
import time
from dataclasses import dataclass

from bastion import acktrace
from bastion.node.idle import idle_priority

MADV_COLLAPSE = 25
HUGE = 2 * 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class CollapseResult:
    supported: bool
    ranges: int
    bytes: int
    seconds: float


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _anonymous_ranges() -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 5 or not parts[1].startswith("rw") or parts[1][3] != "p":
                continue
            if len(parts) > 5 and parts[5] != "[heap]":
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            start = (lo + HUGE - 1) // HUGE * HUGE
            end = hi // HUGE * HUGE
            if end > start:
                ranges.append((start, end))
    return ranges


def collapse_heap(idle: bool = False) -> CollapseResult:
    """Ask the kernel to back anonymous heap memory with huge pages (best effort); ``idle``:
    only in the CPU's idle time (see the module's text)."""
    if idle:
        with idle_priority():
            return collapse_heap()
    trace = acktrace.TRACE
    if trace is None:
        return _collapse()
    start = acktrace.now()
    result = _collapse()
    trace.event("collapse", start, acktrace.now(), result.bytes)
    return result


def _collapse() -> CollapseResult:
    t0 = time.perf_counter()
    if not sys.platform.startswith("linux"):
        return CollapseResult(False, 0, 0, 0.0)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        madvise = libc.madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        madvise.restype = ctypes.c_int
        ranges = _anonymous_ranges()
    except (OSError, AttributeError):
        return CollapseResult(False, 0, 0, 0.0)
    done = 0
    total = 0
    for start, end in ranges:
        if madvise(start, end - start, MADV_COLLAPSE) == 0:
            done += 1
            total += end - start
        elif ctypes.get_errno() == errno.EINVAL and done == 0:
            return CollapseResult(False, 0, 0, time.perf_counter() - t0)
    return CollapseResult(True, done, total, time.perf_counter() - t0)
