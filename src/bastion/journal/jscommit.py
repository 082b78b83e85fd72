"""Pipelined group commit onto JetStream: many commands per message, several messages in
flight.

Each message is fenced on the stream sequence its predecessor will get, so messages can be
published back to back without waiting for acks: if any one of them is refused (a new leader
wrote first), every later one is refused too, and the writer stops. A lost ack is resolved by
reading the log and retrying with the same ``Nats-Msg-Id``. Under load the window fills and
waiting requests merge into bigger messages, the way the local committer merges into one
fdatasync.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bastion.journal.errors import DurabilityError, FencedError, JournalClosedError

if TYPE_CHECKING:
    from bastion.journal.jetstream import JetStreamJournal

Guard = Callable[[], BaseException | None]


@dataclass
class _Request:
    records: list[bytes]
    expected_last_seq: int
    future: Future[int] = field(default_factory=Future)
    size: int = 0
    #: False for the leading parts of a request split over several messages
    whole: bool = True


@dataclass
class _Message:
    requests: list[_Request]
    records: list[bytes]
    first_seq: int
    expected_stream_seq: int
    previous_own: int
    checkpoint: bool


class PipelinedCommitter:
    """Same contract as ``GroupCommitter.submit``: the future resolves to the new last seq
    only once the stream has the records (quorum, fsynced)."""

    def __init__(self, journal: JetStreamJournal, *, term: int, max_records: int = 8192,
                 window: int = 4, guard: Guard | None = None,
                 checkpoint_every: float = 0.0) -> None:
        self.journal = journal
        self.max_bytes = journal.max_message_bytes
        self.nats = journal.nats
        self.term = term
        self.max_records = max_records
        self.window = window
        self.guard = guard
        self.checkpoint_every = checkpoint_every
        tail = journal.tail
        self._stream_seq = tail.stream_seq  # stream seq the next message is fenced on
        # where this writer's previous message on its term's subject is (0: none yet)
        self._previous_own = tail.stream_seq if tail.term == term else 0
        self._queued_last = tail.last_seq  # command seq the last submitted request ends at
        self._lock = threading.Lock()
        self._queue: deque[_Request] = deque()
        self._inflight = 0
        self._scheduled = False
        self._failure: BaseException | None = None
        self._closing = False
        self._idle = threading.Event()
        self._idle.set()
        self._last_checkpoint = time.monotonic()
        #: command seqs that end a checkpoint message (replicas hash their state there)
        self.checkpoint_ends: deque[int] = deque(maxlen=64)
        self.batches = 0
        self.records = 0
        self.publish_seconds: deque[float] = deque(maxlen=10_000)

    def submit(self, records: list[bytes], expected_last_seq: int) -> Future[int]:
        request = _Request(records, expected_last_seq, size=sum(map(len, records)))
        with self._lock:
            if self._closing:
                raise JournalClosedError("committer is closed")
            if self._failure is not None:
                request.future.set_exception(self._failure)
                return request.future
            if expected_last_seq != self._queued_last:
                request.future.set_exception(FencedError(expected_last_seq, self._queued_last,
                                                         "out of order submit"))
                return request.future
            self._queued_last += len(records)
            self._queue.append(request)
            self._idle.clear()
            if not self._scheduled:
                self._scheduled = True
                self.nats.call_soon(self._pump)
        return request.future

    def close(self) -> None:
        """Wait for queued and in-flight messages to resolve, then refuse new work."""
        self._idle.wait(30)
        with self._lock:
            self._closing = True

    def fail(self, exc: BaseException) -> None:
        """Stop: nothing queued is published; in-flight messages resolve by the log's truth."""
        with self._lock:
            if self._failure is None:
                self._failure = exc
            doomed = list(self._queue)
            self._queue.clear()
        for request in doomed:
            if not request.future.done():
                request.future.set_exception(exc)
        self._maybe_idle()

    def _stop_reason(self) -> BaseException | None:
        if self._failure is not None:
            return self._failure
        if self.guard is not None:
            reason = self.guard()
            if reason is not None:
                self.fail(reason)
                return reason
        return None

    # --- on the NATS loop -------------------------------------------------------------------

    def _pump(self) -> None:
        with self._lock:
            self._scheduled = False
        while self._inflight < self.window:
            if self._stop_reason() is not None:
                return
            message = self._take()
            if message is None:
                return
            self._inflight += 1
            self.nats.loop.create_task(self._send(message))

    def _take(self) -> _Message | None:
        with self._lock:
            if not self._queue:
                return None
            taken: list[_Request] = []
            count = size = 0
            while self._queue:
                nxt = self._queue[0]
                if taken and (count + len(nxt.records) > self.max_records
                              or size + nxt.size > self.max_bytes):
                    break
                if not taken and (len(nxt.records) > self.max_records
                                  or nxt.size > self.max_bytes):
                    self._split_head()
                    continue
                taken.append(self._queue.popleft())
                count += len(nxt.records)
                size += nxt.size
            first = taken[0].expected_last_seq + 1
            expected_stream = self._stream_seq
            previous_own = self._previous_own
            self._stream_seq += 1
            self._previous_own = expected_stream + 1
        now = time.monotonic()
        checkpoint = bool(self.checkpoint_every) and now - self._last_checkpoint >= \
            self.checkpoint_every and taken[-1].whole
        if checkpoint:
            self._last_checkpoint = now
        records = taken[0].records if len(taken) == 1 else [r for t in taken for r in t.records]
        return _Message(taken, records, first, expected_stream, previous_own, checkpoint)

    def _split_head(self) -> None:
        """A request too big for one message becomes several chained ones; only the last
        resolves the caller (called with the lock held)."""
        head = self._queue.popleft()
        parts: list[_Request] = []
        records = head.records
        start = 0
        expected = head.expected_last_seq
        while start < len(records):
            end = start
            size = 0
            while end < len(records) and end - start < self.max_records and \
                    (end == start or size + len(records[end]) <= self.max_bytes):
                size += len(records[end])
                end += 1
            parts.append(_Request(records[start:end], expected, size=size, whole=False))
            expected += end - start
            start = end
        parts[-1].future = head.future
        parts[-1].whole = True
        for part in reversed(parts):
            self._queue.appendleft(part)

    async def _send(self, message: _Message) -> None:
        t0 = time.perf_counter()
        try:
            out = self.journal.message(message.records, message.first_seq, self.term,
                                       message.expected_stream_seq, message.previous_own,
                                       message.checkpoint)
            outcome = await self.journal.publish_resolved(out, message.expected_stream_seq,
                                                          self._stop_reason)
            if outcome != "stored":
                fresh = await self.journal.fetch_tail()
                raise FencedError(message.first_seq - 1, fresh.last_seq,
                                  f"stream {self.journal.stream} has another writer's message "
                                  f"at {message.expected_stream_seq + 1}")
        except BaseException as exc:
            error = exc if isinstance(exc, DurabilityError) else DurabilityError(
                f"append failed: {exc!r}", code="JOURNAL_IO")
            self.fail(error)
            for request in message.requests:
                if not request.future.done():
                    request.future.set_exception(error)
            self._done_one()
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        last = message.first_seq + len(message.records) - 1
        self.journal.advance(message.expected_stream_seq + 1, last, self.term)
        if message.checkpoint:
            self.checkpoint_ends.append(last)
        self.batches += 1
        self.records += len(message.records)
        self.publish_seconds.append(time.perf_counter() - t0)
        for request in message.requests:
            if not request.future.done():
                request.future.set_result(request.expected_last_seq + len(request.records))
        self._done_one()

    def _done_one(self) -> None:
        self._inflight -= 1
        self._pump()
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        with self._lock:
            if not self._queue and self._inflight <= 0:
                self._idle.set()
