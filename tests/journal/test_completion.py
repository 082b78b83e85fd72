"""The group committer's ``Completion``: the future subset the node relies on, across threads."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from bastion.journal import GroupCommitter, LocalJournal
from bastion.journal.errors import FencedError
from bastion.journal.group import Completion


def test_callbacks_run_once_whether_added_before_or_after_the_outcome() -> None:
    c = Completion()
    seen: list[tuple[str, int]] = []
    c.add_done_callback(lambda d: seen.append(("before", d.result())))
    assert not c.done()
    c.set_result(7)
    c.add_done_callback(lambda d: seen.append(("after", d.result())))
    assert c.done() and c.exception() is None
    assert seen == [("before", 7), ("after", 7)]
    with pytest.raises(RuntimeError):
        c.set_result(8)  # an outcome is set once
    assert c.result() == 7


def test_a_blocked_result_wakes_on_the_writer_thread_and_times_out_otherwise() -> None:
    c = Completion()
    with pytest.raises(TimeoutError):
        c.result(timeout=0.01)
    boom = FencedError(1, 2)
    threading.Timer(0.05, c.set_exception, (boom,)).start()
    with pytest.raises(FencedError):
        c.result(timeout=10)
    assert c.exception() is boom


def test_a_callback_added_while_the_writer_finishes_is_never_lost(tmp_path) -> None:
    """Races ``add_done_callback`` (the loop) against the writer completing each append."""
    gc = GroupCommitter(LocalJournal(tmp_path), max_delay=0.0)
    try:
        calls = []
        last = 0
        for i in range(300):
            done = gc.submit([b"r%d" % i], last)
            done.add_done_callback(calls.append)
            last = done.result(timeout=10)
        assert last == 300
        assert len(calls) == 300 and all(c.done() for c in calls)
    finally:
        gc.close()


def test_the_writer_thread_does_not_preempt_the_loop(tmp_path) -> None:
    """With ``yield_to_waker`` the writer runs as ``SCHED_BATCH`` (no wake-up preemption of
    the event loop that wakes it); by default, and for the submitting thread, the policy is
    left alone."""
    if not hasattr(os, "sched_getscheduler"):
        pytest.skip("no scheduling policies on this platform")
    own = os.sched_getscheduler(0)
    for yields in (True, False):
        gc = GroupCommitter(LocalJournal(tmp_path / str(yields)), max_delay=0.0,
                            yield_to_waker=yields)
        try:
            assert gc.submit([b"a"], 0).result(timeout=10) == 1
            tid = gc._thread.native_id
            assert tid is not None
            assert os.sched_getscheduler(tid) == (os.SCHED_BATCH if yields else own)
            assert os.sched_getscheduler(0) == own
        finally:
            gc.close()


def _voluntary_switches(tid: int) -> int:
    for line in Path(f"/proc/self/task/{tid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches line")


def test_submits_during_one_linger_wake_the_writer_about_twice(tmp_path) -> None:
    """Thirty submits spread over one linger make one batch, and the writer thread blocks a
    few times for it, not once per submit: a ``put`` no longer wakes it while it lingers (on
    a pinned server each such wake switched the event loop out and cost a GIL hand-off)."""
    if not os.path.exists("/proc/self/task"):
        pytest.skip("per-thread context switch counts need Linux /proc")
    gc = GroupCommitter(LocalJournal(tmp_path), max_delay=0.0)
    try:
        assert gc.submit([b"warm"], 0).result(timeout=10) == 1
        gc.max_delay = 1.0
        tid = gc._thread.native_id
        assert tid is not None
        waits0, batches0, switched0 = gc.waits, gc.batches, _voluntary_switches(tid)
        started = time.monotonic()
        done = [gc.submit([b"r%d" % i], 1 + i) for i in range(30) if time.sleep(0.002) is None]
        if time.monotonic() - started > 0.8:
            pytest.skip("the submits took most of the linger (machine too busy)")
        assert done[-1].result(timeout=10) == 31
        assert all(d.done() and d.result() == 2 + i for i, d in enumerate(done))
        assert gc.batches - batches0 == 1
        assert gc.waits - waits0 == 2  # the first request, then the linger
        assert _voluntary_switches(tid) - switched0 < 15  # was one per submit (30+)
    finally:
        gc.close()
