"""Group commit: one writer thread turns many small appends into one write + one fdatasync.

Submissions that extend each other (each one's expected seq is the previous one's end) are
merged into a single fenced ``Journal.append``. The thread releases the GIL while it writes and
syncs, so the caller keeps stamping and applying while the disk works.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

from bastion.journal.base import Journal
from bastion.journal.errors import JournalClosedError


@dataclass
class _Request:
    records: list[bytes]
    expected_last_seq: int
    future: Future[int] = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)


class GroupCommitter:
    """Batches appends until ``max_records`` are queued or the oldest waiting one has waited
    ``max_delay`` seconds; under load the previous fsync is the wait, so nothing idles."""

    def __init__(
        self, journal: Journal, *, max_records: int = 8192, max_delay: float = 0.001
    ) -> None:
        self.journal = journal
        self.max_records = max_records
        self.max_delay = max_delay
        self._queue: deque[_Request] = deque()
        self._cv = threading.Condition()
        self._closing = False
        self.batches = 0
        self.records = 0
        self._thread = threading.Thread(target=self._run, name="journal-writer", daemon=True)
        self._thread.start()

    def submit(self, records: list[bytes], expected_last_seq: int) -> Future[int]:
        """Queue an append; the future resolves to the new last seq only after it is durable."""
        request = _Request(records, expected_last_seq)
        with self._cv:
            if self._closing:
                raise JournalClosedError("group committer is closed")
            self._queue.append(request)
            self._cv.notify()
        return request.future

    def close(self) -> None:
        """Flush what is queued, then stop the writer thread."""
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join()

    def _take(self) -> list[_Request] | None:
        with self._cv:
            while not self._queue and not self._closing:
                self._cv.wait()
            if not self._queue:
                return None
            taken: list[_Request] = []
            count = 0
            deadline = self._queue[0].arrived + self.max_delay
            while True:
                while self._queue and count < self.max_records:
                    request = self._queue.popleft()
                    taken.append(request)
                    count += len(request.records)
                remaining = deadline - time.monotonic()
                if count >= self.max_records or remaining <= 0 or self._closing:
                    return taken
                self._cv.wait(remaining)

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            for group in _contiguous(taken):
                records = group[0].records if len(group) == 1 else _concat(group)
                try:
                    self.journal.append(records, group[0].expected_last_seq)
                except BaseException as exc:  # every waiter must hear about the failure
                    for request in group:
                        request.future.set_exception(exc)
                    continue
                self.batches += 1
                self.records += len(records)
                for request in group:
                    request.future.set_result(request.expected_last_seq + len(request.records))


def _contiguous(requests: list[_Request]) -> list[list[_Request]]:
    groups: list[list[_Request]] = []
    for request in requests:
        if groups:
            prev = groups[-1][-1]
            if request.expected_last_seq == prev.expected_last_seq + len(prev.records):
                groups[-1].append(request)
                continue
        groups.append([request])
    return groups


def _concat(group: list[_Request]) -> list[bytes]:
    out: list[bytes] = []
    for request in group:
        out.extend(request.records)
    return out
