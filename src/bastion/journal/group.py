"""Group commit: one writer thread turns many small appends into one write + one fdatasync.

Submissions that extend each other (each one's expected seq is the previous one's end) are
merged into a single fenced ``Journal.append``. The thread releases the GIL while it writes and
syncs, so the caller keeps stamping and applying while the disk works.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from bastion import acktrace
from bastion.journal.base import Journal
from bastion.journal.errors import JournalClosedError
from bastion.journal.framing import Framed

log = logging.getLogger("bastion.journal")


class Completion:
    """The outcome of one queued append, set once by the writer thread.

    The subset of ``concurrent.futures.Future`` the node and tests use (``done``, ``result``,
    ``exception``, ``add_done_callback``), without its ``threading.Condition``: that future
    takes a Python-level condition on both threads for every state check and notifies it on
    every result, so each journal batch cost the event loop and the writer several GIL round
    trips for bookkeeping alone. Here a check is an attribute read; the C lock only orders a
    callback added while the writer finishes, and a blocking ``result()`` (tests, tools) makes
    its own event."""

    __slots__ = ("_callbacks", "_done", "_error", "_event", "_lock", "_value")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = False
        self._value = 0
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[Completion], object]] = []
        self._event: threading.Event | None = None

    def done(self) -> bool:
        return self._done

    def result(self, timeout: float | None = None) -> int:
        """The new last seq once durable; raises the append's error, or ``TimeoutError``."""
        self._wait(timeout)
        if self._error is not None:
            raise self._error
        return self._value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._wait(timeout)
        return self._error

    def add_done_callback(self, fn: Callable[[Completion], object]) -> None:
        """``fn(self)`` once done: in the writer thread, or at once if already done."""
        with self._lock:
            if not self._done:
                self._callbacks.append(fn)
                return
        fn(self)

    def set_result(self, value: int) -> None:
        self._finish(value, None)

    def set_exception(self, error: BaseException) -> None:
        self._finish(0, error)

    def _finish(self, value: int, error: BaseException | None) -> None:
        with self._lock:
            if self._done:
                raise RuntimeError("append outcome already set")
            self._value, self._error, self._done = value, error, True
            callbacks, self._callbacks = self._callbacks, []
            event = self._event
        if event is not None:
            event.set()
        for fn in callbacks:
            try:
                fn(self)
            except Exception:
                log.exception("journal completion callback failed")

    def _wait(self, timeout: float | None) -> None:
        if self._done:
            return
        with self._lock:
            if self._done:
                return
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        if not event.wait(timeout):
            raise TimeoutError(f"append not durable within {timeout} s")


@dataclass
class _Request:
    records: list[bytes]
    expected_last_seq: int
    count: int
    framed: Framed | None = None
    future: Completion = field(default_factory=Completion)
    arrived: float = field(default_factory=time.monotonic)


class FramingJournal(Protocol):
    """Optional backend extension: blocks built in the submitting thread."""

    def frame(self, records: list[bytes], first_seq: int) -> Framed: ...

    def append_framed(self, batches: list[Framed], expected_last_seq: int) -> int: ...


class LockKeepingJournal(Protocol):
    """Optional backend extension: keep the write lock between appends while busy."""

    def keep_lock(self, keep: bool) -> None: ...

    def release_lock(self) -> None: ...


#: seconds without appends after which a lock-keeping backend's lock is given back, so a
#: second writer (to be fenced) waits at most about this long for it
LOCK_LINGER = 0.02


class GroupCommitter:
    """Batches appends until the oldest waiting one has waited ``max_delay`` seconds, at most
    ``max_records`` per batch; under load the previous fsync is the wait, so nothing idles."""

    def __init__(
        self,
        journal: Journal,
        *,
        max_records: int = 8192,
        max_delay: float = 0.001,
        lock_linger: float = LOCK_LINGER,
        yield_to_waker: bool = False,
    ) -> None:
        """``yield_to_waker``: run the writer thread as ``SCHED_BATCH`` (see
        ``_yield_to_waker``)."""
        self.journal = journal
        self.yield_to_waker = yield_to_waker
        self._framing: FramingJournal | None = (
            typing.cast(FramingJournal, journal)
            if hasattr(journal, "frame") and hasattr(journal, "append_framed")
            else None
        )
        self._keeper: LockKeepingJournal | None = (
            typing.cast(LockKeepingJournal, journal)
            if hasattr(journal, "keep_lock") and hasattr(journal, "release_lock")
            else None
        )
        self.lock_linger = lock_linger
        self.max_records = max_records
        self.max_delay = max_delay
        #: the hand-off to the writer: a C queue whose ``put`` wakes a blocked ``get`` without
        #: the Python-level ``threading.Condition`` machinery (this runs once per loop turn
        #: that produced commands, on the event loop's thread); ``None`` asks it to stop
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._closing = False
        self._submit_lock = threading.Lock()
        self.batches = 0
        self.records = 0
        #: times the writer thread blocked for a request or slept out a linger: about two per
        #: batch, whatever the number of submits in it
        self.waits = 0
        #: called in the writer thread after each durable append with (records, seconds the
        #: write + sync took): the journal's fsync latency and batch size for ``/metrics``
        self.on_batch: Callable[[int, float], None] | None = None
        self._trace = acktrace.TRACE
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._thread.start()

    def submit(self, records: list[bytes], expected_last_seq: int) -> Completion:
        """Queue an append; the future resolves to the new last seq only after it is durable."""
        framed = (
            self._framing.frame(records, expected_last_seq + 1)
            if self._framing is not None and records
            else None
        )
        request = _Request(records, expected_last_seq, len(records), framed)
        with self._submit_lock:  # never queued behind close()'s stop marker
            if self._closing:
                raise JournalClosedError("group committer is closed")
            self._queue.put(request)
        return request.future

    def close(self) -> None:
        """Flush what is queued, then stop the writer thread."""
        with self._submit_lock:
            if not self._closing:
                self._closing = True
                self._queue.put(None)
        self._thread.join()

    def _take(self) -> list[_Request] | None:
        """Everything queued (until ``max_records`` is reached) once the oldest one has waited
        ``max_delay`` for company; ``None`` once closed and drained.

        With a linger (``max_delay`` > 0) the writer sleeps it out in one timed wait and then
        drains the queue without blocking, rather than blocking on the queue until the
        deadline: each ``put`` wakes a blocked ``get``, so a linger spent in ``get`` woke this
        thread once per submit (once per loop turn that produced commands), and on a pinned
        server each such wake switched out the event loop, found its GIL taken and forced a
        GIL hand-off. Now it wakes about twice per batch whatever the submits."""
        try:
            first = self._queue.get(timeout=self.lock_linger) if self._keeper else self._queue.get()
        except queue.Empty:
            assert self._keeper is not None
            self._keeper.release_lock()
            first = self._queue.get()
        self.waits += 1
        if first is None:
            return None
        remaining = first.arrived + self.max_delay - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
            self.waits += 1
        taken = [first]
        count = first.count
        while count < self.max_records:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                break
            if request is None:  # close(): write what was taken, then stop
                self._queue.put(None)
                break
            taken.append(request)
            count += request.count
        return taken

    def _run(self) -> None:
        if self.yield_to_waker:
            _yield_to_waker()
        if self._keeper is not None:
            self._keeper.keep_lock(True)
        try:
            self._loop()
        finally:
            if self._keeper is not None:
                self._keeper.keep_lock(False)

    def _loop(self) -> None:
        trace = self._trace
        while (taken := self._take()) is not None:
            taken_at = acktrace.now() if trace is not None else 0
            for group in _contiguous(taken):
                t0 = time.perf_counter()
                try:
                    self._append(group)
                except BaseException as exc:  # every waiter must hear about the failure
                    for request in group:
                        request.future.set_exception(exc)
                    continue
                took = time.perf_counter() - t0
                if trace is not None:
                    trace.writes.append((group[0].expected_last_seq + 1,
                                         sum(r.count for r in group), taken_at, acktrace.now()))
                self.batches += 1
                for request in group:
                    self.records += request.count
                    request.future.set_result(request.expected_last_seq + request.count)
                observe = self.on_batch
                if observe is not None:
                    with contextlib.suppress(Exception):  # a metrics bug never stops the writer
                        observe(sum(r.count for r in group), took)

    def _append(self, group: list[_Request]) -> None:
        expected = group[0].expected_last_seq
        if self._framing is not None and all(r.framed is not None for r in group):
            self._framing.append_framed([r.framed for r in group if r.framed], expected)
        else:
            records = group[0].records if len(group) == 1 else _concat(group)
            self.journal.append(records, expected)


def _yield_to_waker() -> None:
    """Run the calling (writer) thread as ``SCHED_BATCH``: it no longer preempts the thread
    that wakes it. The waker is the event loop, which holds the GIL while it runs, so a writer
    preempting it on the same CPU (a pinned server, a busy machine) could only switch in, find
    the GIL taken and switch back. It then runs when the loop waits or its time slice ends;
    with a free CPU nothing changes. The cost: while the loop never waits (at the maximum),
    each of the writer's GIL round trips also waits for a time slice. Best effort."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def _contiguous(requests: list[_Request]) -> list[list[_Request]]:
    groups: list[list[_Request]] = []
    for request in requests:
        if groups:
            prev = groups[-1][-1]
            if request.expected_last_seq == prev.expected_last_seq + prev.count:
                groups[-1].append(request)
                continue
        groups.append([request])
    return groups


def _concat(group: list[_Request]) -> list[bytes]:
    out: list[bytes] = []
    for request in group:
        out.extend(request.records)
    return out
