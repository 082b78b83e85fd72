"""Node tuning knobs; defaults suit the embedded single-process exchange."""

from __future__ import annotations

from dataclasses import dataclass

from bastion.journal.local import DEFAULT_SEGMENT_BYTES


@dataclass(frozen=True)
class NodeConfig:
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    #: group commit: flush after this many records or this many seconds, whichever first
    group_max_records: int = 8192
    group_max_delay: float = 0.001
    #: the journal writer never preempts the event loop that wakes it (``SCHED_BATCH``)
    writer_yields: bool = False
    #: scheduled snapshots (0 disables that trigger)
    snapshot_every_commands: int = 1_000_000
    snapshot_every_seconds: float = 600.0
    #: retention: newest N ``auto`` snapshots plus every named one
    snapshot_keep: int = 3
    #: before a snapshot fork, back the heap with huge pages (MADV_COLLAPSE) when the process
    #: is larger than this many MiB, so the fork pause stays a few ms (0 disables). Off by
    #: default: on a kernel without preemption in kernel code each 2 MiB step holds the CPU
    #: ~18 ms whatever the thread's priority, so a pinned loop stalls in ~20 ms pieces for
    #: seconds (a 300 MiB heap), where the fork it shortens stops it once for 8-15 ms
    hugepage_collapse_min_rss_mb: int = 0
    #: the collapse runs at idle priority (it gets no CPU while the loop never waits), so a
    #: snapshot forks after this many seconds whether or not it is done
    hugepage_collapse_wait: float = 5.0
    #: move journal segments covered by the oldest retained snapshot to ``archive/journal``
    archive_covered_segments: bool = True
    #: rich progress bar during replay (None: only when stderr is a terminal)
    progress: bool | None = None
    #: move everything recovered (possibly millions of orders) out of the cyclic GC's reach at
    #: start, so full collections do not rescan it while trading
    gc_freeze_after_recovery: bool = True
