"""The huge-page collapse before a fork runs in the CPU's idle time when asked to."""

from __future__ import annotations

import os
import threading

import pytest

from bastion.node import hugepages


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="no SCHED_IDLE on this platform")
def test_an_idle_collapse_runs_as_sched_idle_and_restores_the_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def ranges() -> list[tuple[int, int]]:
        seen.append(os.sched_getscheduler(0))
        return []

    monkeypatch.setattr(hugepages, "_anonymous_ranges", ranges)
    policies: list[int] = []

    def worker() -> None:
        policies.append(os.sched_getscheduler(0))
        hugepages.collapse_heap(idle=True)
        policies.append(os.sched_getscheduler(0))
        hugepages.collapse_heap()

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    before, after = policies
    assert seen == [os.SCHED_IDLE, before]  # idle only when asked
    assert after == before  # the thread (an executor's, say) is as it was after
