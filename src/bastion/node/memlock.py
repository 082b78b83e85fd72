"""Keep the process's pages in memory once touched (``mlockall``), so a latency-critical
server never waits for a page the kernel evicted.

Proactive reclaim (DAMON ``pageout``, swap, memory-cgroup pressure) evicts pages idle for a
few seconds, file pages included: the code of a path not run lately (a periodic task, a rare
error reply, the full GC) is then re-read from disk on its next call, a stall of tens to
hundreds of ms on a busy disk. ``MCL_ONFAULT`` locks pages as they are first touched, so
memory use is what the process actually uses, never the whole mapped address space.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import sys

MCL_CURRENT = 1
MCL_FUTURE = 2
MCL_ONFAULT = 4
_CAP_IPC_LOCK = 14


def _may_lock_all() -> str | None:
    """Why locking every future mapping is unsafe here (``None``: it is safe). Without
    ``CAP_IPC_LOCK`` a finite ``RLIMIT_MEMLOCK`` would make later allocations fail."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status") as f:
            caps = next(line for line in f if line.startswith("CapEff:"))
        if int(caps.split()[1], 16) >> _CAP_IPC_LOCK & 1:
            return None
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    return f"RLIMIT_MEMLOCK is {soft} bytes and the process lacks CAP_IPC_LOCK"


def lock_memory() -> str | None:
    """Lock present and future pages as they are touched; returns why not (``None`` when
    locked). Best effort: a refusal leaves the process as it was."""
    if not sys.platform.startswith("linux"):
        return "memory locking is only supported on Linux"
    why = _may_lock_all()
    if why is not None:
        return why
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        mlockall = libc.mlockall
    except (OSError, AttributeError) as exc:
        return f"mlockall unavailable: {exc}"
    mlockall.argtypes = [ctypes.c_int]
    mlockall.restype = ctypes.c_int
    if mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0:
        return f"mlockall failed: errno {ctypes.get_errno()}"
    return None


def locked_bytes() -> int:
    """``VmLck`` of this process (0 when unknown)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmLck:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0
