"""Opt-in per-order stage trace of the acknowledgement path, to find where a slow ack's time
went (``BASTION_ACK_TRACE=<path>``; off by default, and then each hook is one ``is None``).

What is recorded, all as ``time.monotonic_ns()`` (the clock ``bench/gateway.py`` shares):
- per order (event loop): receipt by the transport, the call into the node, the resumption
  after the journal's completion, with its seq and client order id (how the bench joins them);
- per journal request (event loop): the seq range and when it went to the group committer,
  and when the loop drained it (applied it and resumed its callers);
- per journal write (writer thread): when the writer took the batch and when its write+sync
  returned;
- process events with a start and an end: garbage collections by generation, event-loop
  ticks that ran late, huge-page collapses, forks (node snapshot, read-model checkpoint),
  segment rolls, periodic full collections.

Everything is kept in memory (a few tuples per order) and written as one JSON document at
``close`` (the server's shutdown): a hot path never does I/O for it. A path the process cannot
write is refused when the variable is read, at the process's start (``error:
ACK_TRACE_UNWRITABLE: ...``, exit status 1), not found out at shutdown. ``bench/gateway.py
--trace`` turns it on and prints, for the slowest 1% of each fixed-rate phase, how their
latency splits by stage and which events overlapped them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

ENV = "BASTION_ACK_TRACE"

log = logging.getLogger("bastion.acktrace")

now = time.monotonic_ns


class AckTrace:
    """The process's trace buffers; every list is appended by one thread only."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        #: set by a transport when it has an order in hand, read by the gateway when the
        #: order goes to the node (the same callback: order entry runs without a task)
        self.received = 0
        #: (client order id, seq, received, submitted, resumed)
        self.orders: list[tuple[str, int, int, int, int]] = []
        #: (first seq, count, queued to the committer)
        self.queued: list[tuple[int, int, int]] = []
        #: (first seq, count, taken by the writer, written and synced)
        self.writes: list[tuple[int, int, int, int]] = []
        #: (first seq, drain started on the loop)
        self.drained: list[tuple[int, int]] = []
        #: (kind, start, end, value)
        self.events: list[tuple[str, int, int, int]] = []
        self._lock = threading.Lock()  # events come from several threads
        self._written = False

    def event(self, kind: str, start: int, end: int, value: int = 0) -> None:
        with self._lock:
            self.events.append((kind, start, end, value))

    def close(self) -> None:
        """Write everything once (later calls do nothing)."""
        if self._written:
            return
        self._written = True
        with self._lock:
            events = list(self.events)
        doc = {"pid": os.getpid(), "orders": self.orders, "queued": self.queued,
               "writes": self.writes, "drained": self.drained, "events": events}
        try:
            self._tmp.write_text(json.dumps(doc, separators=(",", ":")))
            self._tmp.replace(self.path)
        except OSError as exc:  # checked at start: the disk filled or the directory went
            log.error("ack trace not written to %s: %s", self.path, exc)

    @property
    def _tmp(self) -> Path:
        return self.path.with_name(self.path.name + ".tmp")

    def check(self) -> None:
        """Raise ``UnwritableTrace`` unless ``close`` can write the trace where it goes."""
        if self.path.is_dir():
            raise UnwritableTrace(f"{ENV}={self.path} is a directory; name a file")
        try:
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UnwritableTrace(f"{ENV}={self.path}: cannot write there "
                                  f"({exc.strerror})") from None
        os.close(fd)
        self._tmp.unlink()


class UnwritableTrace(ValueError):
    pass


def from_env(env: dict[str, str] | None = None) -> AckTrace | None:
    """The trace ``BASTION_ACK_TRACE`` asks for (``UnwritableTrace`` if it cannot be written)."""
    path = (os.environ if env is None else env).get(ENV, "")
    if not path:
        return None
    trace = AckTrace(path)
    trace.check()
    return trace


def _process_trace() -> AckTrace | None:
    try:
        return from_env()
    except UnwritableTrace as exc:
        raise SystemExit(f"error: ACK_TRACE_UNWRITABLE: {exc}") from None


#: the process's trace, or ``None`` (the default): read once by each hook's owner when it is
#: built, so a test may set it before building a node and a gateway
TRACE: AckTrace | None = _process_trace()
