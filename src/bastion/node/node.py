"""One shard: sequencer -> journal (group commit) -> engine -> acknowledge and publish.

A command is applied only after the journal holds it durably, and its caller hears back only
after it is applied, so an acknowledgement always survives a crash and state never runs ahead
of the log. Reads go straight to ``node.engine`` and never touch the journal.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import time
import typing
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bastion import acktrace
from bastion.core import commands as C
from bastion.core import events as E
from bastion.core.codec import encode_command
from bastion.core.engine import Engine
from bastion.journal.base import Committer, Durable, Journal
from bastion.journal.errors import DurabilityError
from bastion.journal.fsutil import PLAIN, FileOps
from bastion.journal.group import GroupCommitter
from bastion.journal.local import LocalJournal
from bastion.node.config import NodeConfig
from bastion.node.hugepages import CollapseResult, collapse_heap, rss_bytes
from bastion.node.layout import DataDir, NodeLock
from bastion.node.recovery import RecoverySink, adopted, rebuild, write_snapshot
from bastion.node.rollback import complete_pending_rollback
from bastion.node.snapshotter import ForkSnapshotter
from bastion.snapshots.store import AUTO, SnapshotInfo, SnapshotStore, check_name

log = logging.getLogger("bastion.node")

Results = list[list[E.Event]]
Subscriber = Callable[[list[E.Event]], None]
_KNOWN_COMMANDS = frozenset(typing.get_args(C.AnyCommand))


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class _Batch:
    cmds: Sequence[C.Command]
    future: asyncio.Future[Results]
    durable: Durable
    queued: float = 0.0
    #: one future per command (``submit``): resolved by ``_drain`` itself, not by a callback
    #: on ``future`` a loop turn later
    waiters: list[asyncio.Future[list[E.Event]]] | None = None


class Node:
    """Recovers the shard on construction; ``await start()`` (or ``async with``) to run it."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        config: NodeConfig | None = None,
        clock: Callable[[], int] = wall_clock_ms,
        journal: Journal | None = None,
        recovery_sink: RecoverySink | None = None,
        fs: FileOps = PLAIN,
        engine: Engine | None = None,
    ) -> None:
        """``engine``: state already rebuilt from ``journal`` (a cluster standby promoted to
        leader has it warm), so no recovery runs here."""
        self.data = DataDir.at(data_dir)
        #: called in each snapshot's writer child with the snapshot's seq (``ForkSnapshotter``)
        self.snapshot_hooks: list[Callable[[int], None]] = []
        self.config = config or NodeConfig()
        self._clock = clock
        self._lock = NodeLock(self.data)
        try:
            complete_pending_rollback(self.data)
            self.store = SnapshotStore(self.data.snapshots, fs=fs)
            self.store.cleanup_tmp()
            self.journal: Journal = journal or LocalJournal(
                self.data.journal,
                archive_dir=self.data.journal_archive,
                segment_bytes=self.config.segment_bytes,
                fs=fs,
            )
            if engine is not None:
                self.engine, self.recovery = engine, adopted(engine, self.journal.epoch)
            else:
                self.engine, self.recovery = rebuild(
                    self.journal, self.store, progress=self.config.progress, sink=recovery_sink
                )
        except BaseException:
            self._lock.release()
            raise
        log.info("%s", self.recovery.summary())
        self._next_seq = self.engine.seq + 1
        self._last_ts = self.engine.ts
        self._term = self.journal.term_at(self.engine.seq)
        self._inflight: deque[_Batch] = deque()
        self._pending: list[tuple[C.Command, asyncio.Future[list[E.Event]]]] = []
        self._subscribers: list[Subscriber] = []
        self._failure: BaseException | None = None
        self._closing = False
        self._wake_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._committer: Committer | None = None
        self._snapshotter: ForkSnapshotter | None = None
        self._housekeeping: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_snapshot_seq = self.recovery.snapshot_seq
        self._last_snapshot_at = time.monotonic()
        self._snapshot: asyncio.Future[SnapshotInfo] | None = None
        self._collapse_supported = True
        self.collapses: list[CollapseResult] = []
        self._trace = acktrace.TRACE

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> Node:
        self._loop = asyncio.get_running_loop()
        if self.config.gc_freeze_after_recovery:
            gc.collect()
            gc.freeze()
        own = getattr(self.journal, "committer", None)  # a backend's own (pipelined) one
        self._committer = (
            own(max_records=self.config.group_max_records, max_delay=self.config.group_max_delay)
            if own is not None
            else GroupCommitter(
                self.journal,
                max_records=self.config.group_max_records,
                max_delay=self.config.group_max_delay,
                yield_to_waker=self.config.writer_yields,
            )
        )
        self._snapshotter = ForkSnapshotter(self.store, self._loop, self.snapshot_hooks)
        if self.config.snapshot_every_seconds > 0:
            self._timer = self._loop.call_later(self.config.snapshot_every_seconds, self._tick)
        return self

    async def close(self) -> None:
        """Drain in-flight commands, let a running snapshot finish, release files and locks."""
        if self._closing:
            return
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        if self._pending:
            self._flush_pending()
        waiting = [b.future for b in self._inflight]
        if waiting:
            await asyncio.gather(*waiting, return_exceptions=True)
        if self._snapshot is not None:
            await asyncio.gather(self._snapshot, return_exceptions=True)
        if self._housekeeping is not None:
            await asyncio.gather(self._housekeeping, return_exceptions=True)
        if self._committer is not None:
            self._committer.close()
        self.journal.close()
        self._lock.release()
        if self._trace is not None:
            self._trace.close()

    async def __aenter__(self) -> Node:
        return await self.start()

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # --- the write path ---------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self.journal.epoch

    @property
    def last_seq(self) -> int:
        """Last applied (hence durable) sequence number."""
        return self.engine.seq

    def pending_age(self) -> float:
        """Seconds the oldest unacknowledged batch has waited (0 when nothing is pending): a
        journal that stops acknowledging shows here within seconds, an idle one never does."""
        return time.monotonic() - self._inflight[0].queued if self._inflight else 0.0

    @property
    def committer(self) -> Committer | None:
        """The journal's group committer once started (its ``on_batch`` feeds metrics)."""
        return self._committer

    @property
    def snapshot_pauses(self) -> list[float]:
        return self._snapshotter.pauses if self._snapshotter else []

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Receive the events of what each wake-up applied (every batch the journal made
        durable since the last one), in sequence order; returns an unsubscribe."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def submit_many(self, cmds: Sequence[C.Command]) -> asyncio.Future[Results]:
        """Sequence, journal and apply a batch; resolves to each command's events once they are
        durable and applied. The cheapest path: one journal request and one wake-up per batch.
        Commands are stamped in place (``seq``, ``ts``)."""
        self._check_accepting()
        for cmd in cmds:
            if type(cmd) not in _KNOWN_COMMANDS:
                raise DurabilityError(
                    f"not a journalable command: {type(cmd).__name__}", code="BAD_COMMAND"
                )
        return self._enqueue(cmds)

    async def submit(self, cmd: C.Command) -> list[E.Event]:
        """One command; concurrent callers in the same loop tick share one journal batch."""
        self._check_accepting()
        if type(cmd) not in _KNOWN_COMMANDS:
            raise DurabilityError(
                f"not a journalable command: {type(cmd).__name__}", code="BAD_COMMAND"
            )
        assert self._loop is not None
        future: asyncio.Future[list[E.Event]] = self._loop.create_future()
        if not self._pending:
            self._loop.call_soon(self._flush_pending)
        self._pending.append((cmd, future))
        return await future

    def _check_accepting(self) -> None:
        if self._failure is not None:
            exc = self._failure
            code = exc.code if isinstance(exc, DurabilityError) else "NODE_FAILED"
            raise DurabilityError(f"node stopped after a journal failure: {exc}", code=code)
        if self._closing:
            raise DurabilityError("node is shutting down", code="NODE_CLOSED")
        if self._loop is None:
            raise DurabilityError("node not started (await node.start())", code="NODE_NOT_STARTED")

    def _flush_pending(self) -> None:
        items, self._pending = self._pending, []
        if not items:
            return
        try:
            self._enqueue([cmd for cmd, _ in items], [future for _, future in items])
        except DurabilityError as exc:
            for _, future in items:
                if not future.done():
                    future.set_exception(exc)

    def _enqueue(
        self,
        cmds: Sequence[C.Command],
        waiters: list[asyncio.Future[list[E.Event]]] | None = None,
    ) -> asyncio.Future[Results]:
        assert self._loop is not None and self._committer is not None
        future: asyncio.Future[Results] = self._loop.create_future()
        if not cmds:
            future.set_result([])
            return future
        ts = self._clock()
        if ts < self._last_ts:
            ts = self._last_ts
        self._last_ts = ts
        expected = self._next_seq - 1
        seq = self._next_seq
        for cmd in cmds:
            cmd.seq = seq
            cmd.ts = ts
            seq += 1
        self._next_seq = seq
        durable = self._committer.submit(list(map(encode_command, cmds)), expected)
        if self._trace is not None:
            self._trace.queued.append((expected + 1, len(cmds), acktrace.now()))
        self._inflight.append(_Batch(cmds, future, durable, time.monotonic(), waiters))
        durable.add_done_callback(self._wake)
        return future

    def _wake(self, _durable: object) -> None:
        """Writer thread: hand completions back to the loop, once per burst."""
        if not self._wake_scheduled:
            self._wake_scheduled = True
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:
                log.warning("event loop closed with commands in flight; they stay unacknowledged")

    def _drain(self) -> None:
        """Apply every durable batch at the head and answer its callers, then publish all
        their events in one call: a writer batch covers one request per loop turn (one per
        order on REST), and each publish costs the subscribers a book diff and a fan-out pass.
        Events are published before a failure stops the node (those batches stay applied)."""
        self._wake_scheduled = False
        queue = self._inflight
        apply = self.engine.apply
        applied = False
        published: list[E.Event] = []
        trace = self._trace
        started = acktrace.now() if trace is not None else 0
        try:
            while queue and queue[0].durable.done():
                batch = queue.popleft()
                if trace is not None and batch.cmds:
                    trace.drained.append((batch.cmds[0].seq, started))
                exc = batch.durable.exception()
                if exc is not None:
                    self._fail(exc, batch)
                    return
                try:
                    results = [apply(cmd) for cmd in batch.cmds]
                except Exception as bug:  # apply never raises by contract; if it does, stop
                    self._fail(bug, batch)
                    return
                applied = True
                if not batch.future.done():
                    batch.future.set_result(results)
                if batch.waiters is not None:
                    for waiter, events in zip(batch.waiters, results, strict=True):
                        if not waiter.done():
                            waiter.set_result(events)
                for events in results:
                    published += events
        finally:
            if published and self._subscribers:
                self._publish(published)
        if applied:
            self._term = self.journal.epoch
            self._maybe_snapshot()

    def _publish(self, events: list[E.Event]) -> None:
        for callback in list(self._subscribers):
            try:
                callback(events)
            except Exception:
                log.exception("event subscriber failed; it stays subscribed")

    def _fail(self, exc: BaseException, batch: _Batch) -> None:
        """A journal failure (fence, I/O) stops the node: nothing after it can be acknowledged."""
        log.error("journal append failed, node stops accepting commands: %s", exc)
        self._failure = exc
        doomed = [batch, *self._inflight]
        self._inflight.clear()
        for item in doomed:
            if not item.future.done():
                item.future.set_exception(exc)
                if item.waiters is not None:
                    item.future.exception()  # its callers hear it from their own futures
            for waiter in item.waiters or ():
                if not waiter.done():
                    waiter.set_exception(exc)

    @property
    def failure(self) -> BaseException | None:
        return self._failure

    # --- snapshots --------------------------------------------------------------------------

    def _tick(self) -> None:
        assert self._loop is not None
        self._maybe_snapshot()
        self._timer = self._loop.call_later(self.config.snapshot_every_seconds, self._tick)

    def _maybe_snapshot(self) -> None:
        if self._snapshotting() or self._closing:
            return
        fresh = self.engine.seq - self._last_snapshot_seq
        if fresh <= 0:
            return
        every_n = self.config.snapshot_every_commands
        every_s = self.config.snapshot_every_seconds
        if (every_n and fresh >= every_n) or (
            every_s and time.monotonic() - self._last_snapshot_at >= every_s
        ):
            self._begin_snapshot(AUTO)

    def _snapshotting(self) -> bool:
        return self._snapshot is not None and not self._snapshot.done()

    def _begin_snapshot(self, name: str) -> asyncio.Future[SnapshotInfo]:
        """Collapse the heap into huge pages first when it is big (off the loop, in the CPU's
        idle time), then fork: when it is done, or after ``hugepage_collapse_wait``."""
        loop = self._loop
        assert loop is not None
        result: asyncio.Future[SnapshotInfo] = loop.create_future()
        self._snapshot = result
        self._last_snapshot_at = time.monotonic()
        limit = self.config.hugepage_collapse_min_rss_mb
        if limit and self._collapse_supported and rss_bytes() > limit * 1024 * 1024:
            collapsing = loop.run_in_executor(None, functools.partial(collapse_heap, idle=True))
            collapsing.add_done_callback(self._collapsed)
            forked = False

            def fork(*_: object) -> None:
                nonlocal forked
                if not forked:
                    forked = True
                    timer.cancel()
                    self._fork_snapshot(name, result)

            timer = loop.call_later(self.config.hugepage_collapse_wait, fork)
            collapsing.add_done_callback(fork)
        else:
            self._fork_snapshot(name, result)
        return result

    def _collapsed(self, done: asyncio.Future[CollapseResult]) -> None:
        if not done.cancelled() and done.exception() is None:
            outcome = done.result()
            self._collapse_supported = outcome.supported
            self.collapses.append(outcome)

    def _fork_snapshot(self, name: str, result: asyncio.Future[SnapshotInfo]) -> None:
        assert self._snapshotter is not None
        try:
            job = self._snapshotter.start(
                self.engine, term=self._term, created_ms=self._clock(), name=name
            )
        except DurabilityError as exc:
            result.set_exception(exc)
            return
        except OSError as exc:
            result.set_exception(
                DurabilityError(f"cannot fork a snapshot writer: {exc}", code="SNAPSHOT_FAILED")
            )
            return
        self._last_snapshot_seq = job.seq
        job.future.add_done_callback(self._snapshot_done)

        def forward(done: asyncio.Future[SnapshotInfo]) -> None:
            exc = done.exception()
            if result.done():
                return
            if exc is not None:
                result.set_exception(exc)
            else:
                result.set_result(done.result())

        job.future.add_done_callback(forward)

    async def snapshot(self, name: str = AUTO) -> SnapshotInfo:
        """On-demand snapshot of the current applied state (named ones survive retention).
        A caller giving up (cancelled) must not cancel the node's record of a running child,
        which ``close()`` waits for: hence ``wait`` and ``shield``, never a cancelling gather."""
        check_name(name)
        self._check_accepting()
        while self._snapshot is not None and not self._snapshot.done():
            await asyncio.wait([self._snapshot])
        return await asyncio.shield(self._begin_snapshot(name))

    def _snapshot_done(self, done: asyncio.Future[SnapshotInfo]) -> None:
        exc = done.exception()
        if exc is not None:
            log.error("snapshot failed: %s", exc)
            return
        if self._housekeeping is None or self._housekeeping.done():
            assert self._loop is not None
            self._housekeeping = self._loop.run_in_executor(None, self._housekeep)

    def _housekeep(self) -> None:
        """Retention, then archive journal segments the oldest kept snapshot covers."""
        try:
            self.store.retain(self.config.snapshot_keep)
            archive = getattr(self.journal, "archive_through", None)
            if not self.config.archive_covered_segments or archive is None:
                return
            for info in self.store.entries():
                if self._on_this_timeline(info):
                    archive(info.seq)
                    return
        except Exception:
            log.exception("snapshot housekeeping failed (nothing is lost; will retry next time)")

    def _on_this_timeline(self, info: SnapshotInfo) -> bool:
        """Only a snapshot of this journal's history may decide what gets archived (a stray
        one from an abandoned timeline must not)."""
        try:
            header = self.store.header(info)
            return header.seq <= self.journal.last_seq and (
                self.journal.term_at(header.seq) == header.term
            )
        except DurabilityError:
            return False

    def snapshot_offline(self, name: str = AUTO) -> SnapshotInfo:
        """Write a snapshot in-process (operator tools with no running loop)."""
        return write_snapshot(
            self.store, self.engine, term=self._term, created_ms=self._clock(), name=name
        )

    def close_offline(self) -> None:
        """Release a node that was never started."""
        self.journal.close()
        self._lock.release()
