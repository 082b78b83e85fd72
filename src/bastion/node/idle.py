"""Background work that must only use the CPU's idle time: ``SCHED_IDLE`` for the calling
thread (Linux; best effort elsewhere).

On a server pinned to one CPU, a helper at normal priority (the huge-page collapse before a
fork, a forked checkpoint writer) takes its share of that CPU for seconds and every order in that
time queues behind it. As ``SCHED_IDLE`` it runs only while the trading threads wait, which at
half load is most of the time, and not at all while they never wait.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
from collections.abc import Iterator

#: ``ioprio_set`` by machine (Linux); ``IOPRIO_WHO_PROCESS``, ``IOPRIO_CLASS_IDLE << 13``
_IOPRIO_SET = {"x86_64": 251, "aarch64": 30}
_WHO_PROCESS, _CLASS_IDLE = 1, 3 << 13


def become_idle() -> tuple[int, os.sched_param] | None:
    """Run the calling thread as ``SCHED_IDLE``; returns its previous policy (None: unchanged)."""
    try:
        before = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        return None
    return before


@contextlib.contextmanager
def idle_priority() -> Iterator[None]:
    """``SCHED_IDLE`` inside the block, the thread's own policy again after (an executor's
    thread is reused)."""
    before = become_idle()
    try:
        yield
    finally:
        if before is not None:
            with contextlib.suppress(OSError):
                os.sched_setscheduler(0, *before)


def idle_io() -> bool:
    """Give the calling process's disk I/O the idle class: a scheduler that knows classes
    (mq-deadline, bfq) serves it only when nothing else waits, so a forked writer's big flush
    never queues in front of the journal's small synced appends. Best effort; True if set."""
    number = _IOPRIO_SET.get(platform.machine())
    if number is None or not hasattr(os, "sched_getaffinity"):  # Linux only
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.syscall(number, _WHO_PROCESS, 0, _CLASS_IDLE)) == 0
    except (OSError, AttributeError):
        return False
