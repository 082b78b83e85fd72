"""Local-file journal: the embedded default backend.

Layout of ``<dir>``: segment files (see ``segments``), ``META.json`` (epoch and how far the log
has been archived) and ``LOCK`` (an flock held only while appending or recovering). Archived
segments live in ``archive_dir`` and stay readable through ``read``.

The fence is checked against the files themselves under the flock, not only against memory, so
a second process holding a stale view of the log is refused even though it has its own object.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bastion import acktrace
from bastion.journal.errors import (
    DurabilityError,
    FencedError,
    JournalClosedError,
    JournalCorruptError,
    JournalIOError,
)
from bastion.journal.framing import ENTRY_SIZE, HEADER_SIZE, Framed, encode_block, overhead
from bastion.journal.fsutil import (
    FILE_MODE,
    PLAIN,
    FileOps,
    atomic_write,
    copy_durable,
    ensure_dir,
    fsync_dir,
    move_durable,
    write_all,
)
from bastion.journal.segments import (
    Scanner,
    Segment,
    active_name,
    list_segments,
    read_bytes,
    sealed_name,
)

log = logging.getLogger("bastion.journal")

META_NAME = "META.json"
META_FORMAT = 1
#: a kept flock is given back after an append once it has been held this long (seconds), so a
#: second writer gets its turn (and is fenced) even while the node never idles
LOCK_HOLD_MAX = 0.1
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class JournalStats:
    first_seq: int
    last_seq: int
    epoch: int
    archived_through: int
    segments: int
    archived_segments: int
    torn_tail_truncated: int


class LocalJournal:
    """Append-only segment files of CRC32C-checked blocks, one fdatasync per appended batch."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        archive_dir: str | os.PathLike[str] | None = None,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        readonly: bool = False,
        fs: FileOps = PLAIN,
    ) -> None:
        self.directory = Path(directory)
        self._dir = str(self.directory)
        self._meta_path = os.path.join(self._dir, META_NAME)
        self._fs = fs
        #: the active segment is opened O_DSYNC, so an append's write is its own fdatasync (one
        #: syscall: one GIL round trip for the writer thread instead of two); a layer that
        #: intercepts ``fdatasync`` (the power-loss and failing-disk tests) gets explicit calls
        self._dsync = os.O_DSYNC if type(fs).fdatasync is FileOps.fdatasync else 0
        self.archive_dir = (
            Path(archive_dir)
            if archive_dir is not None
            else self.directory.parent / "archive" / self.directory.name
        )
        if segment_bytes < HEADER_SIZE + ENTRY_SIZE + 1:
            raise DurabilityError(f"segment_bytes too small: {segment_bytes}", code="BAD_CONFIG")
        self.segment_bytes = segment_bytes
        self.readonly = readonly
        self._lock = threading.RLock()
        self._closed = False
        self._failed: BaseException | None = None
        self._fd: int | None = None
        self._active_size = 0
        self._segments: list[Segment] = []
        self._last_seq = 0
        self._last_epoch = 0
        self._epoch = 1
        self._archived_through = 0
        self._meta_ino = 0
        #: whether this object holds the flock now, and whether appends keep it (``keep_lock``)
        self._held = False
        self._held_since = 0.0
        self._keeper: int | None = None
        self.torn_tail_truncated = 0
        self.torn_tail: str | None = None
        if readonly:
            if not self.directory.is_dir():
                raise DurabilityError(
                    f"no journal directory at {self.directory}", code="NO_JOURNAL"
                )
            self._lock_fd: int | None = None
            self._load()
        else:
            ensure_dir(self.directory, fs)
            self._lock_fd = fs.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, FILE_MODE)
            _forget_lock_in_forked_children(self)
            with self._flocked():
                self._load()

    # --- Journal protocol -------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def first_seq(self) -> int:
        if self._archived_through:
            archived = list_segments(self.archive_dir)
            if archived:
                return archived[0].first
        return self._archived_through + 1

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def archived_through(self) -> int:
        return self._archived_through

    def append(self, records: list[bytes], expected_last_seq: int) -> int:
        with self._lock, self._appending(expected_last_seq):
            if records:
                with self._failing_on_oserror():
                    self._write(records)
            return self._last_seq

    def keep_lock(self, keep: bool) -> None:
        """Appends made by the calling thread (the group committer's writer) keep the flock
        until ``release_lock``. Nobody else can touch the files meanwhile, so each append after
        the first is a bare write + fdatasync: every syscall the writer makes is a GIL round
        trip, which can wait up to a switch interval while the event loop runs Python. The
        keeper releases once idle, so another writer is fenced within that time; a failed
        append always releases, and appends from other threads never keep it."""
        with self._lock:
            self._keeper = threading.get_ident() if keep else None
            if not keep:
                self.release_lock()

    def release_lock(self) -> None:
        """Give back a flock kept since the last append (no-op when not held)."""
        with self._lock:
            if self._held:
                self._held = False
                if self._lock_fd is not None:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    @contextmanager
    def _appending(self, expected_last_seq: int) -> Iterator[None]:
        """The fence (the full one against the files unless the flock was kept since our own
        last append), then the caller's write."""
        self._check_writable()
        if self._held:
            if expected_last_seq != self._last_seq:
                self.release_lock()
                raise FencedError(expected_last_seq, self._last_seq)
        else:
            self._take_flock()
            try:
                self._check_fence(expected_last_seq)
            except BaseException:
                self.release_lock()
                raise
        try:
            yield
        except BaseException:
            self.release_lock()
            raise
        if (
            self._keeper != threading.get_ident()
            or time.monotonic() - self._held_since > LOCK_HOLD_MAX
        ):
            self.release_lock()

    @contextlib.contextmanager
    def _failing_on_oserror(self) -> Iterator[None]:
        """A failed write leaves the file in an unknown state: refuse writes until reopened."""
        try:
            yield
        except OSError as exc:
            self._failed = exc
            raise JournalIOError(
                f"write to {self.directory} failed ({exc}); the journal refuses "
                "further writes until reopened"
            ) from exc

    def frame(self, records: list[bytes], first_seq: int) -> Framed:
        """Encode a block ahead of time, in the caller's thread: the group-commit writer then
        only writes and syncs (no Python work competing with the engine for the GIL)."""
        return Framed(
            encode_block(records, first_seq, self._epoch), first_seq, len(records), self._epoch
        )

    def append_framed(self, batches: list[Framed], expected_last_seq: int) -> int:
        """``append`` for blocks made by ``frame``: same fence, one write, one fdatasync. A
        block is never split, so a segment may exceed ``segment_bytes`` by one block."""
        with self._lock, self._appending(expected_last_seq):
            nxt = expected_last_seq + 1
            for batch in batches:
                if batch.first_seq != nxt or batch.epoch != self._epoch:
                    raise FencedError(
                        expected_last_seq,
                        self._last_seq,
                        f"block for seq {batch.first_seq} epoch {batch.epoch} does not "
                        f"extend seq {nxt - 1} in epoch {self._epoch}",
                    )
                nxt += batch.count
            if batches:
                with self._failing_on_oserror():
                    self._write_framed(batches)
            return self._last_seq

    def read(self, from_seq: int, to_seq: int | None = None) -> Iterator[tuple[int, bytes]]:
        for seq, _epoch, payload in self._records(from_seq, to_seq):
            yield seq, payload

    def term_at(self, seq: int) -> int:
        if seq == 0:
            return 0
        if seq == self._last_seq:
            return self._last_epoch
        for _seq, epoch, _payload in self._records(seq, seq):
            return epoch
        raise DurabilityError(f"seq {seq} is not in the journal", code="SEQ_NOT_FOUND")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.release_lock()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> LocalJournal:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- administration ---------------------------------------------------------------------

    def stats(self) -> JournalStats:
        return JournalStats(
            first_seq=self.first_seq,
            last_seq=self._last_seq,
            epoch=self._epoch,
            archived_through=self._archived_through,
            segments=len(self._segments),
            archived_segments=len(list_segments(self.archive_dir)),
            torn_tail_truncated=self.torn_tail_truncated,
        )

    def verify(self) -> int:
        """Read and check every record still readable (archive included); returns the count."""
        count = 0
        first = self.first_seq
        for _ in self._records(first, None):
            count += 1
        return count

    def archive_through(self, seq: int) -> int:
        """Move sealed segments whose records are all ``<= seq`` into the archive.

        ``archived_through`` is made durable first; a crash before the moves finish is completed
        on the next open, and archived records stay readable, so nothing is lost or doubled.
        """
        with self._lock:
            self._check_writable()
            with self._flocked():
                covered: list[Segment] = []
                for seg in self._segments:
                    if seg.sealed_last is None or seg.sealed_last > seq:
                        break
                    covered.append(seg)
                if not covered:
                    return self._archived_through
                last = covered[-1].sealed_last
                assert last is not None
                self._write_meta(self._epoch, last)
                for seg in covered:
                    move_durable(seg.path, self.archive_dir, self._fs)
                del self._segments[: len(covered)]
                return self._archived_through

    def truncate_after(self, seq: int, into: Path, new_epoch: int) -> None:
        """Cut the log back to ``seq`` and continue in ``new_epoch``; nothing is deleted.

        Every abandoned record is first preserved in ``into`` (whole segments are moved there,
        the segment holding ``seq`` is copied there before being cut). Each step is idempotent,
        so re-running after a crash at any point finishes the same cut.
        """
        with self._lock:
            self._check_writable()
            with self._flocked():
                if seq < self._archived_through:
                    raise DurabilityError(
                        f"cannot cut back to seq {seq}: records through "
                        f"{self._archived_through} are archived",
                        code="ROLLBACK_TOO_OLD",
                    )
                if seq > self._last_seq:
                    raise DurabilityError(
                        f"cannot cut back to seq {seq}: the journal ends at {self._last_seq}",
                        code="SEQ_BEYOND_END",
                    )
                if new_epoch <= self._epoch and seq < self._last_seq:
                    raise DurabilityError(
                        f"new epoch {new_epoch} must exceed {self._epoch}", code="BAD_EPOCH"
                    )
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
                ensure_dir(into, self._fs)
                holder: Segment | None = None
                for seg in self._segments:
                    if seg.first <= seq and (seg.sealed_last is None or seg.sealed_last >= seq):
                        holder = seg
                holder_last = self._segment_last(holder) if holder else seq
                cut = holder is not None and holder_last > seq
                if cut and holder is not None and not list(into.glob(f"{holder.first:020d}*")):
                    copy_durable(holder.path, into / holder.name, self._fs)
                for seg in self._segments:
                    if seg.first > seq:
                        move_durable(seg.path, into, self._fs)
                if cut and holder is not None:
                    active = self.directory / active_name(holder.first)
                    if holder.sealed_last is not None:
                        os.rename(holder.path, active)
                        fsync_dir(self.directory, self._fs)
                        holder = Segment(active, holder.first, None)
                    atomic_write(active, self._cut_content(holder, seq), self._fs)
                self._write_meta(max(new_epoch, self._epoch), self._archived_through)
                self._load()

    # --- internals --------------------------------------------------------------------------

    @contextmanager
    def _flocked(self) -> Iterator[None]:
        if self._held:  # kept since our last append: already exclusive, and stays so
            yield
            return
        self._take_flock()
        try:
            yield
        finally:
            self.release_lock()

    def _take_flock(self) -> None:
        assert self._lock_fd is not None
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self._held = True
        self._held_since = time.monotonic()

    def _check_writable(self) -> None:
        if self._closed:
            raise JournalClosedError(f"journal {self.directory} is closed")
        if self.readonly:
            raise DurabilityError(f"journal {self.directory} is open read-only", code="READONLY")
        if self._failed is not None:
            raise JournalIOError(
                f"journal {self.directory} failed earlier ({self._failed}); reopen it to recover"
            )

    def _check_fence(self, expected_last_seq: int) -> None:
        if expected_last_seq != self._last_seq:
            raise FencedError(expected_last_seq, self._last_seq)
        changed = ""
        # runs before every append, in the writer thread and mostly holding the GIL: plain
        # string paths (pathlib's parsing cost more than the three syscalls)
        upcoming = active_name(self._last_seq + 1)
        ours = self._fd is not None and self._segments[-1].path.name == upcoming
        if self._fd is not None and os.fstat(self._fd).st_size != self._active_size:
            changed = "the active segment changed on disk"
        elif not ours and os.path.exists(os.path.join(self._dir, upcoming)):
            changed = "another writer started a newer segment"
        elif self._meta_stat() != self._meta_ino:
            changed = "the journal metadata changed on disk"
        if changed:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._load()
            raise FencedError(expected_last_seq, self._last_seq, changed)

    def _meta_stat(self) -> int:
        try:
            return os.stat(self._meta_path).st_ino
        except FileNotFoundError:
            return 0

    def _write_meta(self, epoch: int, archived_through: int) -> None:
        body = {"format": META_FORMAT, "epoch": epoch, "archived_through": archived_through}
        atomic_write(self.directory / META_NAME, json.dumps(body).encode(), self._fs)
        self._epoch = epoch
        self._archived_through = archived_through
        self._meta_ino = self._meta_stat()

    def _read_meta(self) -> None:
        path = self.directory / META_NAME
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            if not self.readonly:
                self._write_meta(1, 0)
            return
        try:
            body = json.loads(raw)
            if body.get("format") != META_FORMAT:
                raise ValueError(f"unknown format {body.get('format')!r}")
            self._epoch = int(body["epoch"])
            self._archived_through = int(body["archived_through"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DurabilityError(f"{path} is unreadable: {exc}", code="JOURNAL_META") from exc
        self._meta_ino = self._meta_stat()

    def _load(self) -> None:
        """(Re)build the in-memory view from disk, finishing interrupted archive/rollover steps
        and truncating a torn tail when writable."""
        self._read_meta()
        segments = list_segments(self.directory)
        if not self.readonly:
            done = [
                s
                for s in segments
                if s.sealed_last is not None and s.sealed_last <= self._archived_through
            ]
            for seg in done:
                log.warning("finishing interrupted archive of %s", seg.name)
                move_durable(seg.path, self.archive_dir, self._fs)
            segments = segments[len(done) :]
        for seg in segments[:-1]:
            if seg.sealed_last is None:
                self._seal_orphan(seg)
        expected = self._archived_through + 1
        for seg in segments:
            if seg.first != expected:
                what = (
                    f"missing segment(s) for seqs {expected}..{seg.first - 1}"
                    if seg.first > expected
                    else f"segment overlaps earlier records (starts at {seg.first})"
                )
                raise JournalCorruptError(seg.name, 0, expected, what)
            if seg.sealed_last is not None:
                if seg.sealed_last < seg.first - 1:
                    raise JournalCorruptError(seg.name, 0, seg.first, "sealed range is inverted")
                expected = seg.sealed_last + 1
        self._segments = segments
        self._last_seq = expected - 1
        self._active_size = 0
        self._last_epoch = 0
        if segments and segments[-1].sealed_last is None:
            self._open_active(segments[-1])
        elif self._last_seq:
            self._last_epoch = self._term_slow(self._last_seq)
        if self._last_epoch > self._epoch:
            raise JournalCorruptError(
                segments[-1].name if segments else "-",
                0,
                self._last_seq,
                f"record epoch {self._last_epoch} is newer than the journal epoch {self._epoch}",
            )

    def _seal_orphan(self, seg: Segment) -> None:
        scanner = Scanner(read_bytes(seg.path), seg.name, seg.first, tail_allowed=False).run()
        seg.sealed_last = scanner.last_seq
        if not self.readonly:
            log.warning("sealing %s left open by an interrupted rollover", seg.name)
            sealed = seg.path.with_name(sealed_name(seg.first, scanner.last_seq))
            os.rename(seg.path, sealed)
            fsync_dir(self.directory, self._fs)
            seg.path = sealed

    def _open_active(self, seg: Segment) -> None:
        buf = read_bytes(seg.path)
        scanner = Scanner(buf, seg.name, seg.first, tail_allowed=True).run()
        self.torn_tail = None
        if scanner.torn_at is not None:
            self.torn_tail = (
                f"torn tail in {seg.name} at offset {scanner.torn_at} after seq "
                f"{scanner.last_seq} ({scanner.torn_reason}, {len(buf) - scanner.torn_at} bytes)"
            )
        if scanner.torn_at is not None and not self.readonly:
            log.warning(
                "journal %s: torn tail in %s at offset %d after seq %d (%s, %d bytes); "
                "truncating (those records were never acknowledged)",
                self.directory,
                seg.name,
                scanner.torn_at,
                scanner.last_seq,
                scanner.torn_reason,
                len(buf) - scanner.torn_at,
            )
            with open(seg.path, "r+b") as f:
                f.truncate(scanner.torn_at)
                self._fs.fsync(f.fileno())
            self.torn_tail_truncated += 1
        self._last_seq = scanner.last_seq
        self._last_epoch = scanner.last_epoch if scanner.last_seq >= seg.first else 0
        if scanner.last_seq < seg.first and scanner.last_seq > 0:
            self._last_epoch = self._term_slow(scanner.last_seq)
        self._active_size = scanner.valid_end
        if not self.readonly:
            self._fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND | self._dsync)

    def _term_slow(self, seq: int) -> int:
        for _seq, epoch, _payload in self._records(seq, seq):
            return epoch
        return 0

    def _segment_last(self, seg: Segment) -> int:
        if seg.sealed_last is not None:
            return seg.sealed_last
        return self._last_seq

    def _cut_content(self, seg: Segment, seq: int) -> bytes:
        """The segment's bytes holding only records ``<= seq`` (a block is split if needed)."""
        buf = read_bytes(seg.path)
        if seq < seg.first:
            return b""
        scanner = Scanner(buf, seg.name, seg.first, tail_allowed=seg.sealed_last is None)
        for block in scanner:
            if block.first_seq <= seq <= block.last_seq:
                if seq == block.last_seq:
                    return buf[: block.end]
                kept = block.payloads[: seq - block.first_seq + 1]
                return buf[: block.offset] + encode_block(kept, block.first_seq, block.epoch)
        raise JournalCorruptError(seg.name, scanner.valid_end, seq, "record not found for cut")

    def _write(self, records: list[bytes]) -> None:
        first = self._last_seq + 1
        n = len(records)
        i = 0
        while i < n:
            if self._fd is None or self._active_size >= self.segment_bytes:
                self._roll(first + i)
            assert self._fd is not None
            j = n
            room = self.segment_bytes - self._active_size
            if overhead(n - i) + sum(map(len, records[i:] if i else records)) > room:
                j = i + 1
                used = overhead(1) + len(records[i])
                while j < n and used + ENTRY_SIZE + len(records[j]) <= room:
                    used += ENTRY_SIZE + len(records[j])
                    j += 1
            data = encode_block(records[i:j] if (i or j < n) else records, first + i, self._epoch)
            write_all(self._fd, data)
            self._active_size += len(data)
            i = j
        assert self._fd is not None
        if not self._dsync:
            self._fs.fdatasync(self._fd)
        self._last_seq = first + n - 1
        self._last_epoch = self._epoch

    def _write_framed(self, batches: list[Framed]) -> None:
        pending: list[bytes] = []
        for batch in batches:
            if self._fd is None or self._active_size >= self.segment_bytes:
                if pending:
                    assert self._fd is not None
                    write_all(self._fd, b"".join(pending))
                    pending.clear()
                self._roll(batch.first_seq)
            pending.append(batch.data)
            self._active_size += len(batch.data)
        assert self._fd is not None
        write_all(self._fd, pending[0] if len(pending) == 1 else b"".join(pending))
        if not self._dsync:
            self._fs.fdatasync(self._fd)
        last = batches[-1]
        self._last_seq = last.first_seq + last.count - 1
        self._last_epoch = self._epoch

    def _roll(self, first: int) -> None:
        """Seal the active segment (data synced first) and start ``<first>.seg``."""
        trace = acktrace.TRACE
        start = acktrace.now() if trace is not None else 0
        if self._fd is not None:
            self._fs.fdatasync(self._fd)
            os.close(self._fd)
            self._fd = None
            active = self._segments[-1]
            sealed = active.path.with_name(sealed_name(active.first, first - 1))
            os.rename(active.path, sealed)
            active.path = sealed
            active.sealed_last = first - 1
        path = self.directory / active_name(first)
        self._fd = self._fs.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | self._dsync, FILE_MODE
        )
        fsync_dir(self.directory, self._fs)
        self._segments.append(Segment(path, first, None))
        self._active_size = 0
        if trace is not None:
            trace.event("segment_roll", start, acktrace.now(), first)

    def _chain(self, from_seq: int) -> tuple[list[Segment], set[int]]:
        """Segments to read from ``from_seq``: archived ones first when needed; the second value
        holds ids of segments that may end in a torn tail (only the live active one)."""
        with self._lock:
            live = [Segment(s.path, s.first, s.sealed_last) for s in self._segments]
            archived_through = self._archived_through
        chain: list[Segment] = []
        if from_seq <= archived_through:
            archived = list_segments(self.archive_dir)
            expected = archived[0].first if archived else archived_through + 1
            for seg in archived:
                if seg.sealed_last is None or seg.first != expected:
                    raise JournalCorruptError(
                        str(self.archive_dir / seg.name), 0, expected, "archive is not contiguous"
                    )
                expected = seg.sealed_last + 1
            if not archived or archived[0].first > from_seq or expected != archived_through + 1:
                raise DurabilityError(
                    f"seq {from_seq} was archived but {self.archive_dir} does not hold "
                    f"seqs {from_seq}..{archived_through} contiguously",
                    code="ARCHIVE_MISSING",
                )
            chain.extend(archived)
        chain.extend(live)
        tail_ids = {id(live[-1])} if live and live[-1].sealed_last is None else set()
        return chain, tail_ids

    def _records(self, from_seq: int, to_seq: int | None) -> Iterator[tuple[int, int, bytes]]:
        """``(seq, epoch, payload)`` for ``from_seq..to_seq``, everything verified."""
        if from_seq < 1:
            raise DurabilityError(f"from_seq must be >= 1, got {from_seq}", code="BAD_RANGE")
        last = self._last_seq if to_seq is None else min(to_seq, self._last_seq)
        if from_seq > last:
            return
        chain, tail_ids = self._chain(from_seq)
        start = 0
        for k, seg in enumerate(chain):
            if seg.first <= from_seq:
                start = k
        expected = from_seq
        for seg in chain[start:]:
            if seg.first > last:
                break
            scanner = Scanner(
                self._read_segment(seg), seg.name, seg.first, tail_allowed=id(seg) in tail_ids
            )
            for block in scanner:
                if block.last_seq < from_seq:
                    continue
                seq = block.first_seq
                epoch = block.epoch
                for payload in block.payloads:
                    if seq >= from_seq:
                        yield seq, epoch, payload
                        expected = seq + 1
                        if seq >= last:
                            return
                    seq += 1
            if seg.sealed_last is not None and scanner.last_seq != seg.sealed_last:
                raise JournalCorruptError(
                    seg.name,
                    scanner.valid_end,
                    scanner.next_seq,
                    f"segment ends after seq {scanner.last_seq} but its name says it holds "
                    f"records through {seg.sealed_last}",
                )
        raise JournalCorruptError(
            chain[-1].name if chain else "-",
            0,
            expected,
            f"journal ends before seq {last}",
        )

    def _read_segment(self, seg: Segment) -> bytes:
        try:
            return read_bytes(seg.path)
        except FileNotFoundError:
            moved = self.archive_dir / seg.path.name
            if moved.exists():
                return read_bytes(moved)
            sealed = [s for s in list_segments(self.directory) if s.first == seg.first]
            if sealed:
                return read_bytes(sealed[0].path)
            raise JournalCorruptError(seg.name, 0, seg.first, "segment file disappeared") from None


def _forget_lock_in_forked_children(journal: LocalJournal) -> None:
    """A forked child (a snapshot writer) shares the LOCK file's open description, so a held
    flock would outlive a killed parent until the child exits and block the restart. The child
    closes its copy: that never unlocks the parent's (only ``LOCK_UN`` or the last close does)."""
    ref = weakref.ref(journal)

    def in_child() -> None:
        j = ref()
        if j is not None and j._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(j._lock_fd)
            j._lock_fd = None
            j._held = False
            j._closed = True

    os.register_at_fork(after_in_child=in_child)
