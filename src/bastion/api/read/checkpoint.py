"""The read model's own checkpoints, so a restart costs the node's recovery and not a replay of
the whole history.

A checkpoint is written from forked memory, so the read model in it is at exactly one seq: by
the node's snapshot child (``Node.snapshot_hooks``, the same seq as the engine snapshot) and,
between node snapshots, by the gateway's own child every ``every`` commands
(``PeriodicCheckpoints``), so the tail the read model has to follow after a restart stays short
whatever the snapshot interval. On start the node loads its newest valid snapshot and replays
the journal after it; ``Restorer.sink`` picks the newest checkpoint at or after that seq and the
node's replay feeds it the commands after the checkpoint's seq as it applies them (earlier ones
are skipped). No second engine, no second pass over the journal.

Each file is ``header + msgpack``: magic, format version, seq, the journal term at that seq
(which timeline it belongs to), payload length and the payload's CRC32C (hardware-assisted, as
the snapshots' own; format 3 files, with a BLAKE2b digest, are still read). A file that is
damaged, of another version, from another timeline (a rollback) or beyond the journal's end is
skipped with a log line, and the gateway falls back to replaying the journal. A file is written
to a temporary name, fsynced and renamed, so a writer killed mid-way leaves the previous ones.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
import signal
import struct
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path

import google_crc32c
import msgspec

from bastion import acktrace
from bastion.api.read.model import (
    TRADES_PER_MARKET,
    Candle,
    ColdAccount,
    ReadModel,
)
from bastion.core import events as E
from bastion.core.engine import Engine
from bastion.core.perp.state import PositionState, position_record, position_state
from bastion.journal.fsutil import ensure_dir, fsync_dir
from bastion.node.hugepages import CollapseResult, collapse_heap, rss_bytes
from bastion.node.idle import become_idle, idle_io
from bastion.node.recovery import Follower

log = logging.getLogger("bastion.api")

FORMAT = 4
KEEP = 3
#: a checkpoint is written and synced this many bytes at a time (see ``Checkpoints.write``)
SYNC_CHUNK = 1 << 20
SUFFIX = ".rmck"
MAGIC = b"BXRM"
#: magic, format, seq, term, payload length, CRC32C of the payload
HEADER = struct.Struct("<4sHQQQI")
#: format 3 (still read): the same with a BLAKE2b-128 digest, 5x slower to check
HEADER_3 = struct.Struct("<4sHQQQ16s")
_PREFIX = struct.Struct("<4sH")


class _State(msgspec.Struct, array_like=True):
    accounts: list[ColdAccount]
    trades: dict[str, list[E.Trade]]
    candles: dict[str, list[Candle]]
    funding: dict[str, list[E.FundingSettled]]
    positions: list[PositionState]


def _export(rm: ReadModel) -> _State:
    return _State(
        accounts=rm.rows(),
        trades={m: list(t) for m, t in rm.trades.items()},
        candles={m: list(c.values()) for m, c in rm.candles.items()},
        funding={m: list(f) for m, f in rm.funding.items()},
        positions=[position_state(p) for p in rm.positions.values()])


def _restore(state: _State, seq: int, engine: Callable[[], Engine]) -> ReadModel:
    rm = ReadModel(engine)
    rm.cold = {acct.account: acct for acct in state.accounts}
    for market, trades in state.trades.items():
        rm.trades[market] = deque(trades, maxlen=TRADES_PER_MARKET)
    for market, candles in state.candles.items():
        rm.candles[market] = OrderedDict((c.start, c) for c in candles)
    for market, funding in state.funding.items():
        rm.funding[market] = deque(funding, maxlen=1_000)
    rm.positions = {(p.account, p.market): position_record(p) for p in state.positions}
    rm.seq = seq
    return rm


class Checkpoint(msgspec.Struct, frozen=True):
    """A checkpoint file whose header and digest checked out (the payload is decoded later)."""

    path: Path
    seq: int
    term: int


class Checkpoints:
    """``<dir>/<seq>.rmck`` files (0600 in a 0700 directory), newest ``KEEP`` kept."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, seq: int) -> Path:
        return self.directory / f"{seq:020d}{SUFFIX}"

    def write(self, rm: ReadModel, seq: int, term: int) -> Path:
        """Durably write ``rm`` as the read model at ``seq`` (``term``: the journal's term
        there); runs in a forked child, never on the event loop."""
        ensure_dir(self.directory)
        os.chmod(self.directory, 0o700)
        payload = msgspec.msgpack.encode(_export(rm))
        header = HEADER.pack(MAGIC, FORMAT, seq, term, len(payload),
                             google_crc32c.value(payload))
        final = self.path(seq)
        tmp = final.with_name(f"{final.name}.{os.getpid()}.tmp")  # two writers may share a seq
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for data in (header, payload):  # not concatenated: the payload may be 100s of MB
                view = memoryview(data)
                while view:
                    # synced a chunk at a time: one flush of the whole file kept the disk
                    # busy for tens of ms, and the journal's synced appends queued behind it
                    chunk = view[:SYNC_CHUNK]
                    while chunk:
                        chunk = chunk[os.write(fd, chunk):]
                    view = view[SYNC_CHUNK:]
                    os.fdatasync(fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        fsync_dir(self.directory)
        for old in sorted(self.directory.glob(f"*{SUFFIX}"))[:-KEEP]:
            old.unlink(missing_ok=True)
        return final

    def newest(self, min_seq: int) -> tuple[Checkpoint, bytes] | None:
        """The newest checkpoint at or after ``min_seq`` whose header and digest check out,
        with its payload; damaged ones are skipped with a warning."""
        if not self.directory.is_dir():
            return None
        for path in sorted(self.directory.glob(f"*{SUFFIX}"), reverse=True):
            name_seq = path.name[: -len(SUFFIX)]
            if not name_seq.isdigit() or int(name_seq) < min_seq:
                continue
            try:
                found = _read(path, int(name_seq))
            except OSError as exc:
                log.warning("read-model checkpoint %s unreadable (%s)", path.name, exc)
                continue
            if isinstance(found, str):
                log.warning("read-model checkpoint %s skipped: %s", path.name, found)
                continue
            return found
        return None

    def clean_temporaries(self) -> None:
        """Half-written files of children that died (only at start, when none is running)."""
        if self.directory.is_dir():
            for tmp in self.directory.glob(f"*{SUFFIX}.*.tmp"):
                tmp.unlink(missing_ok=True)


def _read(path: Path, name_seq: int) -> tuple[Checkpoint, bytes] | str:
    """The checkpoint in ``path`` with its payload (read on its own: the CRC wants bytes, and
    a copy of a large payload would cost more than the check), or why it is not usable."""
    with path.open("rb") as f:
        head = f.read(_PREFIX.size)
        if len(head) < _PREFIX.size:
            return "shorter than its header"
        magic, fmt = _PREFIX.unpack(head)
        if magic != MAGIC:
            return "not a read-model checkpoint"
        if fmt not in (3, FORMAT):
            return f"format {fmt}, this version reads 3 and {FORMAT}"
        header = HEADER if fmt == FORMAT else HEADER_3
        head += f.read(header.size - _PREFIX.size)
        if len(head) < header.size:
            return "shorter than its header"
        _, _, seq, term, length, digest = header.unpack(head)
        if seq != name_seq:
            return f"it says seq {seq}, its name {name_seq}"
        payload = f.read()
    if len(payload) != length:
        return f"payload is {len(payload)} bytes, header says {length}"
    actual = (google_crc32c.value(payload) if fmt == FORMAT
              else hashlib.blake2b(payload, digest_size=16).digest())
    if actual != digest:
        return "checksum mismatch"
    return Checkpoint(path, seq, term), payload


def decode(payload: bytes, seq: int, engine: Callable[[], Engine]) -> ReadModel | None:
    """The read model in a checked payload, or None if it does not decode."""
    try:
        state = msgspec.msgpack.decode(payload, type=_State)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.warning("read-model checkpoint at seq %d does not decode (%s)", seq, exc)
        return None
    return _restore(state, seq, engine)


class Restorer:
    """Given to the node as its ``recovery_sink``: picks the newest checkpoint at or after the
    node's snapshot and follows the replayed tail from the checkpoint's seq (the replay calls
    nothing for the commands before it). ``usable`` says, once the node is up, whether the
    result is the read model at the node's seq."""

    def __init__(self, checkpoints: Checkpoints, prefetch: bool = True) -> None:
        self.checkpoints = checkpoints
        self.restored: ReadModel | None = None
        self.checkpoint: Checkpoint | None = None
        self.base_seq = 0
        self.tail = 0
        #: how long the node's recovery waited for the checkpoint (read, checked, decoded)
        self.seconds = 0.0
        #: CPU seconds reading, checking and decoding it took (in the prefetch thread) and
        #: wall seconds following the tail: the read model's own part of a restart
        self.read_seconds = 0.0
        self.follow_seconds = 0.0
        self._engine: Engine | None = None
        self._newest: tuple[Checkpoint, ReadModel | None] | None = None
        self._reader: threading.Thread | None = None
        if prefetch:
            # reading the file releases the GIL and checking and decoding it take milliseconds:
            # all done while the node loads its snapshot. The newest valid checkpoint is the
            # one ``sink`` wants, or none is.
            self._reader = threading.Thread(target=self._read_newest, daemon=True,
                                            name="read-model checkpoint")
            self._reader.start()

    def _read_newest(self) -> None:
        t0 = time.thread_time()
        found = self.checkpoints.newest(0)
        if found is not None:
            checkpoint, payload = found
            self._newest = checkpoint, decode(payload, checkpoint.seq, self._current)
        self.read_seconds = time.thread_time() - t0

    def sink(self, engine: Engine) -> Follower | None:
        t0 = time.perf_counter()
        self._engine = engine
        if self._reader is None:
            self._read_newest()
        else:
            self._reader.join()
        found, self._newest = self._newest, None
        if found is not None and found[0].seq < engine.seq:
            found = None  # older than the node's snapshot
        self.checkpoints.clean_temporaries()
        self.seconds = time.perf_counter() - t0
        if found is None:
            if engine.seq:
                return None
            self.restored = ReadModel(self._current)  # no snapshot: follow from the start
            return Follower(0, self._follow)
        # a checkpoint beyond the journal's end is never reached (``usable`` says so)
        self.checkpoint, self.restored = found
        if self.restored is None:
            return None
        self.base_seq = self.checkpoint.seq
        return Follower(self.checkpoint.seq, self._follow)

    def _follow(self, events: list[E.Event]) -> None:
        assert self.restored is not None
        t0 = time.perf_counter()
        self.restored.follow(events)
        self.follow_seconds += time.perf_counter() - t0
        self.tail += 1

    def usable(self, target: int, term_at: Callable[[int], int] | None,
               known: tuple[int, int] | None = None) -> str | None:
        """None if ``restored`` is the read model at ``target``, else why not. ``known``: a
        (seq, term) the journal holds (the node's snapshot): terms never go back along the
        journal, so when the journal's end has that term too, so has every seq between, and
        the journal is not read at the checkpoint's seq (that means parsing its segment up to
        there, a large part of a second at 64 MB)."""
        ck = self.checkpoint
        if ck is not None and ck.seq > target:
            return f"checkpoint at seq {ck.seq} is beyond the journal's end (seq {target})"
        if self.restored is None:
            return "no usable checkpoint"
        if self.base_seq + self.tail != target:
            return (f"checkpoint at seq {self.base_seq} + {self.tail} followed commands does "
                    f"not reach seq {target}")
        if ck is not None and term_at is not None:
            try:
                if known is not None and 0 < known[0] <= ck.seq and term_at(target) == known[1]:
                    term = known[1]
                else:
                    term = term_at(ck.seq)
            except Exception as exc:  # noqa: BLE001 - any journal error means "do not trust"
                return f"cannot read the journal's term at seq {ck.seq} ({exc})"
            if term != ck.term:
                return (f"checkpoint at seq {ck.seq} is from another timeline (term {ck.term}, "
                        f"the journal has {term})")
        return None

    def _current(self) -> Engine:
        assert self._engine is not None
        return self._engine


class PeriodicCheckpoints:
    """Between node snapshots, a forked child writes the read model every ``every`` commands
    (one child at a time). As before a node snapshot, a heap over ``collapse_min_rss_mb`` MiB
    is first backed by huge pages in a thread (``bastion.node.hugepages``), so the fork stops
    the loop for a few ms rather than tens. That starts half way to the next checkpoint, so
    it is usually done when the checkpoint is due (else the fork waits for it, up to one more
    interval). The collapse runs at idle priority: at normal priority it took half of a pinned
    server's CPU for over a second, and every order in that time queued behind it.

    ``min_seconds`` spaces checkpoints by time as well: each fork stops the loop for 8-15 ms
    and the copy-on-write faults after it for about as long again, and every order arriving
    meanwhile queues. At 20k commands/s "every 100,000" meant that every 5 s, over 1% of the
    orders (bench/gateway.py's WebSocket half rate, 0.9% of them in the forks' wake alone).
    Under such load the node's own snapshots (every million commands) write a checkpoint
    often anyway."""

    def __init__(self, checkpoints: Checkpoints, every: int, collapse_min_rss_mb: int = 0,
                 min_seconds: float = 0.0) -> None:
        self.checkpoints = checkpoints
        self.every = every
        self.collapse_min_rss = collapse_min_rss_mb * 1024 * 1024
        self.min_seconds = min_seconds
        #: ``time.monotonic()`` of the last fork (or of the start: the first waits as long)
        self.last_at = time.monotonic()
        self.last_seq = 0
        self.written = 0
        self.failed = 0
        #: how long each recent ``fork()`` stopped the loop (seconds)
        self.pauses: deque[float] = deque(maxlen=1_000)
        self.collapses: deque[CollapseResult] = deque(maxlen=1_000)
        self._pid = 0
        self._forked_at = 0
        self._collapsing: threading.Thread | None = None
        self._collapsed: list[CollapseResult] = []
        self._collapse_supported = True
        self._ready = False  # the heap was collapsed since the last fork

    def after_batch(self, rm: ReadModel, seq: int, term: int) -> None:
        """Called after the read model absorbed a live batch, with the engine's seq and the
        journal's term there."""
        due = seq - self.last_seq
        if self.every <= 0 or due < self.every // 2 or self._running():
            return
        if self.min_seconds and time.monotonic() - self.last_at < self.min_seconds:
            return
        if self._collapse_first(due) or due < self.every:
            return
        self._ready = False
        t0 = time.perf_counter()
        try:
            pid = os.fork()
        except Exception as exc:  # noqa: BLE001 - a checkpoint is an optimisation only
            log.warning("read-model checkpoint at seq %d not started: %s", seq, exc)
            self.last_seq = seq
            return
        if pid == 0:  # child: never returns
            _child(self.checkpoints, rm, seq, term)
        pause = time.perf_counter() - t0
        self.pauses.append(pause)
        self._forked_at = acktrace.now()
        trace = acktrace.TRACE
        if trace is not None:
            trace.event("checkpoint_fork", self._forked_at - int(pause * 1e9), self._forked_at,
                        seq)
        self._pid = pid
        self.last_seq = seq
        self.last_at = time.monotonic()

    def _collapse_first(self, due: int) -> bool:
        """True while the heap is being collapsed before a fork (started here if it is big).
        An idle-priority collapse gets no CPU while the loop never waits, so after a second
        interval the fork goes ahead without waiting for it."""
        if self._collapsing is not None:
            if self._collapsing.is_alive():
                return due < 2 * self.every
            self._collapsing = None
            for result in self._collapsed:
                self._collapse_supported = result.supported
                self.collapses.append(result)
            self._collapsed.clear()
            self._ready = True
            return False
        if (not self._ready and self.collapse_min_rss and self._collapse_supported
                and rss_bytes() > self.collapse_min_rss):
            self._collapsing = threading.Thread(
                target=lambda: self._collapsed.append(collapse_heap(idle=True)), daemon=True,
                name="read-model checkpoint: huge pages")
            self._collapsing.start()
            return True
        return False

    def _running(self) -> bool:
        if not self._pid:
            return False
        pid, status = os.waitpid(self._pid, os.WNOHANG)
        if pid == 0:
            return True
        self._reaped(status)
        return False

    def _reaped(self, status: int) -> None:
        self._pid = 0
        trace = acktrace.TRACE
        if trace is not None:  # ends when the loop noticed it (the next batch)
            trace.event("checkpoint_child", self._forked_at, acktrace.now(), status)
        if os.waitstatus_to_exitcode(status) == 0:
            self.written += 1
        else:
            self.failed += 1
            log.warning("read-model checkpoint child failed (status %d)", status)

    def close(self) -> None:
        """Wait for a running child (a stop must not leave it behind)."""
        if self._collapsing is not None:
            self._collapsing.join()
        if self._pid:
            _, status = os.waitpid(self._pid, 0)
            self._reaped(status)


def _child(checkpoints: Checkpoints, rm: ReadModel, seq: int, term: int) -> None:
    code = 1
    try:
        gc.disable()  # collecting would touch (and copy) every page of the parent's heap
        if become_idle() is None:  # only the CPU's idle time: the child inherits its affinity
            with contextlib.suppress(OSError):
                os.nice(10)
        idle_io()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        checkpoints.write(rm, seq, term)
        code = 0
    except BaseException:  # noqa: BLE001 - the child must always reach _exit
        code = 1
    finally:
        os._exit(code)
