"""Local journal: framing, rollover, fencing, group commit, archive and cut-back, on real files."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.journal import FencedError, GroupCommitter, Journal, JournalCorruptError, LocalJournal
from bastion.journal.errors import DurabilityError, JournalClosedError
from bastion.journal.framing import HEADER_SIZE, Block, parse
from bastion.journal.segments import list_segments


def payloads(n: int, start: int = 1) -> list[bytes]:
    return [f"cmd-{i:06d}".encode() * 3 for i in range(start, start + n)]


def fill(j: LocalJournal, total: int, batch: int = 7) -> None:
    while j.last_seq < total:
        n = min(batch, total - j.last_seq)
        j.append(payloads(n, j.last_seq + 1), j.last_seq)


def test_append_read_roundtrip_and_rollover(tmp_path: Path) -> None:
    j = LocalJournal(tmp_path / "journal", segment_bytes=1024)
    assert (j.last_seq, j.first_seq, j.epoch) == (0, 1, 1)
    fill(j, 200)
    assert j.last_seq == 200
    got = list(j.read(1))
    assert [s for s, _ in got] == list(range(1, 201))
    assert [p for _, p in got] == payloads(200)
    assert list(j.read(57, 59)) == list(zip(range(57, 60), payloads(3, 57), strict=True))
    segs = list_segments(tmp_path / "journal")
    assert len(segs) > 5
    assert segs[0].first == 1 and segs[-1].sealed_last is None
    for a, b in zip(segs, segs[1:], strict=False):
        assert a.sealed_last is not None and b.first == a.sealed_last + 1
        assert a.path.stat().st_size <= 1024 + 64
    j.close()
    again = LocalJournal(tmp_path / "journal", segment_bytes=1024)
    assert again.last_seq == 200 and again.verify() == 200
    again.append([b"x"], 200)
    assert list(again.read(201)) == [(201, b"x")]


def test_fence_refuses_stale_writer_and_writes_nothing(tmp_path: Path) -> None:
    d = tmp_path / "journal"
    leader = LocalJournal(d)
    fill(leader, 10)
    stale = LocalJournal(d)
    leader.append([b"new"], 10)
    size = {p.name: p.stat().st_size for p in d.glob("*.seg")}
    with pytest.raises(FencedError) as err:
        stale.append([b"stale"], 10)
    assert err.value.code == "FENCED"
    assert (err.value.expected_last_seq, err.value.actual_last_seq) == (10, 11)
    assert "the active segment changed on disk" in str(err.value)
    assert {p.name: p.stat().st_size for p in d.glob("*.seg")} == size
    with pytest.raises(FencedError):
        leader.append([b"wrong"], 9)
    assert [p for _, p in leader.read(10)] == [payloads(1, 10)[0], b"new"]


def test_fence_across_processes(tmp_path: Path) -> None:
    d = tmp_path / "journal"
    j = LocalJournal(d)
    fill(j, 5)
    code = (
        "import sys\n"
        "from bastion.journal import LocalJournal, FencedError\n"
        f"j = LocalJournal({str(d)!r})\n"
        "try:\n"
        "    j.append([b'intruder'], 3)\n"
        "except FencedError as e:\n"
        "    print(e.code, e.actual_last_seq)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["FENCED", "5"], out.stderr
    assert j.last_seq == 5
    j.append([b"ok"], 5)
    assert [s for s, _ in j.read(1)] == [1, 2, 3, 4, 5, 6]


def test_fence_sees_a_newer_segment_started_elsewhere(tmp_path: Path) -> None:
    d = tmp_path / "journal"
    a = LocalJournal(d, segment_bytes=64)
    a.append([b"a" * 80], 0)
    b = LocalJournal(d, segment_bytes=64)
    b.append([b"b" * 10], 1)
    with pytest.raises(FencedError, match="another writer started a newer segment"):
        a.append([b"c"], 1)
    assert [p for _, p in LocalJournal(d, readonly=True).read(1)] == [b"a" * 80, b"b" * 10]


def test_torn_tail_is_truncated_with_notice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = tmp_path / "journal"
    j = LocalJournal(d)
    fill(j, 20)
    j.close()
    seg = list_segments(d)[-1].path
    full = seg.stat().st_size
    with open(seg, "r+b") as f:
        f.truncate(full - 5)
    ro = LocalJournal(d, readonly=True)
    assert ro.last_seq == 14 and seg.stat().st_size == full - 5
    with caplog.at_level("WARNING", logger="bastion.journal"):
        j = LocalJournal(d)
    assert j.last_seq == 14 and j.torn_tail_truncated == 1
    assert "torn tail" in caplog.text and "after seq 14" in caplog.text
    assert seg.stat().st_size < full - 5
    j.append([b"again"], 14)
    assert list(j.read(14)) == [(14, payloads(1, 14)[0]), (15, b"again")]


@pytest.mark.parametrize("garbage", [b"\x00" * 300, os.urandom(17), b"\xff" * 24])
def test_garbage_tail_after_crash_is_torn(tmp_path: Path, garbage: bytes) -> None:
    d = tmp_path / "journal"
    j = LocalJournal(d)
    fill(j, 12)
    j.close()
    with open(list_segments(d)[-1].path, "ab") as f:
        f.write(garbage)
    j = LocalJournal(d)
    assert j.last_seq == 12 and j.verify() == 12


def _locate(d: Path, seq: int) -> tuple[Path, int, int]:
    """Segment, block offset and payload offset of record ``seq``."""
    for seg in list_segments(d):
        buf = seg.path.read_bytes()
        off = 0
        while off < len(buf):
            block = parse(buf, off)
            assert isinstance(block, Block)
            if block.first_seq <= seq <= block.last_seq:
                pos = off + HEADER_SIZE + 8 * len(block.payloads)
                for k in range(seq - block.first_seq):
                    pos += len(block.payloads[k])
                return seg.path, off, pos
            off = block.end
    raise AssertionError(seq)


def _records_in(directory: Path) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    for seg in list_segments(directory):
        buf = seg.path.read_bytes()
        off = 0
        while off < len(buf):
            block = parse(buf, off)
            assert isinstance(block, Block)
            found.update(
                zip(range(block.first_seq, block.last_seq + 1), block.payloads, strict=True)
            )
            off = block.end
    return found


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))


def test_payload_flip_before_tail_refuses_to_open(tmp_path: Path) -> None:
    d = tmp_path / "journal"
    j = LocalJournal(d)
    fill(j, 30)
    j.close()
    seg, block, pos = _locate(d, 11)
    _flip(seg, pos + 3)
    with pytest.raises(JournalCorruptError) as err:
        LocalJournal(d)
    e = err.value
    assert (e.code, e.segment, e.offset, e.seq) == ("JOURNAL_CORRUPT", seg.name, block, 11)
    assert str(e) == (
        f"JOURNAL_CORRUPT: segment {seg.name} offset {block} seq 11: record checksum mismatch; "
        "intact records follow it, so it is not a torn tail"
    )


HEADER_MISMATCH = "block header checksum mismatch"


@pytest.mark.parametrize(
    ("byte", "reason"),
    [
        (0, HEADER_MISMATCH),
        (5, HEADER_MISMATCH),
        (9, "block extends past end of file"),
        (13, HEADER_MISMATCH),
        (17, HEADER_MISMATCH),
        (25, HEADER_MISMATCH),
        (HEADER_SIZE + 1, HEADER_MISMATCH),
        (HEADER_SIZE + 12, HEADER_MISMATCH),
    ],
    ids=["magic", "crc", "count", "epoch", "seq", "body_len", "length", "record_crc"],
)
def test_header_flip_before_tail_refuses_to_open(tmp_path: Path, byte: int, reason: str) -> None:
    d = tmp_path / "journal"
    j = LocalJournal(d)
    fill(j, 30)
    j.close()
    seg, block, _ = _locate(d, 22)
    _flip(seg, block + byte)
    with pytest.raises(JournalCorruptError) as err:
        LocalJournal(d)
    assert str(err.value) == (
        f"JOURNAL_CORRUPT: segment {seg.name} offset {block} seq 22: {reason}; "
        "intact records follow it, so it is not a torn tail"
    )


def test_flip_in_sealed_segment_is_named_by_read_and_verify(tmp_path: Path) -> None:
    d = tmp_path / "journal"
    j = LocalJournal(d, segment_bytes=512)
    fill(j, 100)
    j.close()
    seg, block, pos = _locate(d, 5)
    assert "-" in seg.name
    _flip(seg, pos)
    j = LocalJournal(d, segment_bytes=512)
    assert [s for s, _ in j.read(50, 52)] == [50, 51, 52]
    expected = f"JOURNAL_CORRUPT: segment {seg.name} offset {block} seq 5: record checksum mismatch"
    with pytest.raises(JournalCorruptError) as err:
        j.verify()
    assert str(err.value) == expected
    with pytest.raises(JournalCorruptError):
        list(j.read(3))


def test_truncated_sealed_segment_is_corruption_not_a_tail(tmp_path: Path) -> None:
    d = tmp_path / "journal"
    j = LocalJournal(d, segment_bytes=512)
    fill(j, 100)
    j.close()
    first = list_segments(d)[0]
    assert first.sealed_last is not None
    with open(first.path, "r+b") as f:
        f.truncate(first.path.stat().st_size - 3)
    j = LocalJournal(d, segment_bytes=512)
    with pytest.raises(JournalCorruptError) as err:
        j.verify()
    assert err.value.segment == first.name
    assert first.first <= err.value.seq <= first.sealed_last
    assert "block extends past end of file" in str(err.value)


def test_deleted_middle_segment_is_a_gap(tmp_path: Path) -> None:
    d = tmp_path / "journal"
    j = LocalJournal(d, segment_bytes=512)
    fill(j, 100)
    j.close()
    segs = list_segments(d)
    gone = segs[2]
    gone.path.unlink()
    assert gone.sealed_last is not None
    with pytest.raises(JournalCorruptError) as err:
        LocalJournal(d)
    assert str(err.value) == (
        f"JOURNAL_CORRUPT: segment {segs[3].name} offset 0 seq {gone.first}: "
        f"missing segment(s) for seqs {gone.first}..{gone.sealed_last}"
    )


def test_deleted_first_segment_is_a_gap(tmp_path: Path) -> None:
    d = tmp_path / "journal"
    j = LocalJournal(d, segment_bytes=512)
    fill(j, 50)
    j.close()
    list_segments(d)[0].path.unlink()
    with pytest.raises(JournalCorruptError, match=r"seq 1: missing segment\(s\) for seqs 1\.\."):
        LocalJournal(d, readonly=True)


def test_group_commit_batches_concurrent_appends(tmp_path: Path) -> None:
    j = LocalJournal(tmp_path / "journal", segment_bytes=4096)
    gc = GroupCommitter(j, max_records=64, max_delay=0.002)
    futures = []
    last = 0
    lock = threading.Lock()

    def producer(k: int) -> None:
        nonlocal last
        for i in range(100):
            with lock:
                futures.append(gc.submit([f"{k}:{i}".encode()], last))
                last += 1

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [f.result(timeout=10) for f in futures] == list(range(1, 401))
    assert gc.records == 400 and gc.batches < 400
    stale = gc.submit([b"late"], 10)
    with pytest.raises(FencedError):
        stale.result(timeout=10)
    gc.close()
    assert j.last_seq == 400 and j.verify() == 400


def test_archive_keeps_history_readable_and_finishes_after_crash(tmp_path: Path) -> None:
    d = tmp_path / "journal"
    j = LocalJournal(d, segment_bytes=512)
    fill(j, 100)
    through = j.archive_through(60)
    assert 0 < through <= 60
    assert j.archived_through == through
    assert list_segments(d)[0].first == through + 1
    assert list_segments(tmp_path / "archive" / "journal")[0].first == 1
    assert [p for _, p in j.read(1)] == payloads(100)
    assert j.first_seq == 1
    j.close()
    # a crash after META was written but before the segments moved: the open finishes the move
    j = LocalJournal(d, segment_bytes=512)
    target = list_segments(d)[0]
    assert target.sealed_last is not None
    meta = json.loads((d / "META.json").read_text())
    meta["archived_through"] = target.sealed_last
    (d / "META.json").write_text(json.dumps(meta))
    j.close()
    j = LocalJournal(d, segment_bytes=512)
    assert list_segments(d)[0].first == target.sealed_last + 1
    assert (tmp_path / "archive" / "journal" / target.name).exists()
    assert j.verify() == 100


@pytest.mark.parametrize("cut", [42, 40, 1, 100], ids=["block-end", "mid-block", "first", "last"])
def test_truncate_after_preserves_abandoned_tail_and_is_idempotent(
    tmp_path: Path, cut: int
) -> None:
    d = tmp_path / "journal"
    j = LocalJournal(d, segment_bytes=512)
    fill(j, 100)
    into = tmp_path / "archive" / "rollback-1"
    j.truncate_after(cut, into, 2)
    assert (j.last_seq, j.epoch) == (cut, 2)
    j.truncate_after(cut, into, 2)
    assert (j.last_seq, j.epoch) == (cut, 2)
    assert [p for _, p in j.read(1)] == payloads(cut)
    abandoned = _records_in(into) if cut < 100 else {}
    assert {s: abandoned[s] for s in range(cut + 1, 101)} == dict(
        zip(range(cut + 1, 101), payloads(100 - cut, cut + 1), strict=True)
    )
    j.append([b"new timeline"], cut)
    assert j.term_at(cut + 1) == 2 and j.term_at(cut) == 1
    j.close()
    assert LocalJournal(d, readonly=True).verify() == cut + 1


def test_errors_are_clean(tmp_path: Path) -> None:
    with pytest.raises(DurabilityError) as err:
        LocalJournal(tmp_path / "missing", readonly=True)
    assert err.value.code == "NO_JOURNAL"
    j = LocalJournal(tmp_path / "journal")
    fill(j, 3)
    with pytest.raises(DurabilityError) as err2:
        list(j.read(0))
    assert err2.value.code == "BAD_RANGE"
    j.close()
    with pytest.raises(DurabilityError) as err3:
        j.append([b"x"], 3)
    assert err3.value.code == "JOURNAL_CLOSED"
    (tmp_path / "journal" / "META.json").write_text("{not json")
    with pytest.raises(DurabilityError) as err4:
        LocalJournal(tmp_path / "journal")
    assert err4.value.code == "JOURNAL_META"


def test_every_rollover_crash_point_recovers(tmp_path: Path) -> None:
    d = tmp_path / "journal"
    j = LocalJournal(d, segment_bytes=256)
    fill(j, 40)
    j.close()
    active = list_segments(d)[-1]
    assert active.sealed_last is None
    # crash after the seal rename, before the next segment exists
    sealed = active.path.with_name(f"{active.first:020d}-{40:020d}.seg")
    os.rename(active.path, sealed)
    j = LocalJournal(d, segment_bytes=256)
    assert j.last_seq == 40 and j.term_at(40) == 1
    j.append([b"after seal"], 40)
    j.close()
    # crash right after the new, still empty, segment was created
    (d / f"{42:020d}.seg").touch()
    os.rename(list_segments(d)[-2].path, d / f"{41:020d}-{41:020d}.seg")
    j = LocalJournal(d, segment_bytes=256)
    assert j.last_seq == 41
    j.append([b"into the empty segment"], 41)
    assert [p for _, p in j.read(40)] == [
        payloads(1, 40)[0],
        b"after seal",
        b"into the empty segment",
    ]
    j.close()
    # an unsealed segment that is not the last one is sealed on open
    segs = list_segments(d)
    os.rename(segs[0].path, d / f"{segs[0].first:020d}.seg")
    j = LocalJournal(d, segment_bytes=256)
    assert list_segments(d)[0].sealed_last == segs[0].sealed_last and j.verify() == 42


class ProtocolOnly:
    """A backend exposing only the ``Journal`` protocol (as a replicated one would)."""

    def __init__(self, inner: LocalJournal) -> None:
        self.inner = inner

    @property
    def last_seq(self) -> int:
        return self.inner.last_seq

    @property
    def first_seq(self) -> int:
        return self.inner.first_seq

    @property
    def epoch(self) -> int:
        return self.inner.epoch

    def append(self, records: list[bytes], expected_last_seq: int) -> int:
        return self.inner.append(records, expected_last_seq)

    def read(self, from_seq: int, to_seq: int | None = None) -> Iterator[tuple[int, bytes]]:
        return self.inner.read(from_seq, to_seq)

    def term_at(self, seq: int) -> int:
        return self.inner.term_at(seq)

    def close(self) -> None:
        self.inner.close()


def test_group_commit_over_a_protocol_only_backend(tmp_path: Path) -> None:
    backend = ProtocolOnly(LocalJournal(tmp_path / "journal", segment_bytes=512))
    assert isinstance(backend, Journal)
    gc = GroupCommitter(backend, max_records=50, max_delay=0.002)
    futures = [gc.submit(payloads(3, 1 + 3 * i), 3 * i) for i in range(40)]
    assert [f.result(timeout=10) for f in futures] == [3 * (i + 1) for i in range(40)]
    with pytest.raises(FencedError):
        gc.submit([b"stale"], 5).result(timeout=10)
    gc.close()
    assert [p for _, p in backend.read(1)] == payloads(120)
    assert gc.batches < 40


def test_damaged_complete_last_block_is_corruption_not_a_tail(tmp_path: Path) -> None:
    d = tmp_path / "journal"
    j = LocalJournal(d)
    fill(j, 21)
    j.close()
    seg, block, pos = _locate(d, 20)
    _flip(seg, pos + 2)
    with pytest.raises(JournalCorruptError) as err:
        LocalJournal(d)
    assert str(err.value) == (
        f"JOURNAL_CORRUPT: segment {seg.name} offset {block} seq 20: record checksum mismatch; "
        "the last block is complete, so this is damage, not a torn write"
    )


def test_never_written_sector_in_last_block_is_a_torn_write(tmp_path: Path) -> None:
    d = tmp_path / "journal"
    j = LocalJournal(d)
    fill(j, 10)
    j.append([bytes([65 + i % 26]) * 60 for i in range(50)], 10)
    j.close()
    seg, block, _ = _locate(d, 11)
    sector = (block // 512 + 2) * 512
    raw = bytearray(seg.read_bytes())
    assert sector + 512 < len(raw)
    raw[sector : sector + 512] = bytes(512)
    seg.write_bytes(bytes(raw))
    j = LocalJournal(d)
    assert j.last_seq == 10 and j.torn_tail_truncated == 1
    assert seg.stat().st_size == block


def test_group_commit_close_flushes_what_was_queued_then_refuses(tmp_path: Path) -> None:
    """``close()`` right after a burst of submits writes all of them (nothing is left behind
    the writer's stop marker); a submit after it is refused, and a second close is harmless."""
    j = LocalJournal(tmp_path / "journal")
    gc = GroupCommitter(j, max_records=7, max_delay=0.0)
    futures = [gc.submit([b"r%d" % i], i) for i in range(50)]
    gc.close()
    assert [f.result(timeout=10) for f in futures] == list(range(1, 51))
    assert gc.batches >= 8  # 50 records, at most 7 per batch
    with pytest.raises(JournalClosedError):
        gc.submit([b"late"], 50)
    gc.close()
    assert j.verify() == 50


def _lock_is_free(lock_file: Path) -> bool:
    fd = os.open(lock_file, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # the last close of this description drops a lock it took
    return True


def test_group_commit_keeps_the_lock_while_busy_and_a_second_writer_is_still_fenced(
    tmp_path: Path,
) -> None:
    """The writer keeps the journal's flock between its appends (no lock and fence syscalls
    per batch), hands it back once idle for ``lock_linger``, and then takes it again with the
    full fence: a writer that appended meanwhile is seen and the stale append is refused."""
    d = tmp_path / "journal"
    busy = GroupCommitter(LocalJournal(d), max_delay=0.0, lock_linger=60.0)
    assert busy.submit([b"a"], 0).result(timeout=10) == 1
    assert not _lock_is_free(d / "LOCK")  # kept between appends
    assert busy.submit([b"b"], 1).result(timeout=10) == 2
    busy.close()  # a stopping writer gives it back
    assert _lock_is_free(d / "LOCK")

    j = LocalJournal(d)
    gc = GroupCommitter(j, max_delay=0.0, lock_linger=0.05)
    assert gc.submit([b"c"], 2).result(timeout=10) == 3
    assert j._fd is not None and fcntl.fcntl(j._fd, fcntl.F_GETFL) & os.O_DSYNC  # write = sync
    deadline = time.monotonic() + 30
    while not _lock_is_free(d / "LOCK"):  # idle: handed back after about 50 ms
        assert time.monotonic() < deadline, "the idle writer never released the journal lock"
        time.sleep(0.01)
    other = LocalJournal(d)
    other.append([b"elsewhere"], 3)
    with pytest.raises(FencedError, match="the active segment changed on disk"):
        gc.submit([b"stale"], 3).result(timeout=10)
    assert _lock_is_free(d / "LOCK")  # a refused append does not keep the lock
    j.append([b"direct"], 4)  # another thread's append never keeps it
    assert _lock_is_free(d / "LOCK")
    gc.close()
    written = [p for _, p in LocalJournal(d, readonly=True).read(1)]
    assert written == [b"a", b"b", b"c", b"elsewhere", b"direct"]


def test_a_second_writer_gets_the_lock_while_the_committer_never_idles(tmp_path: Path) -> None:
    """A kept lock is handed back every ``LOCK_HOLD_MAX`` even under constant appends, so
    another writer (here just opening the journal, which takes the lock) is not starved."""
    d = tmp_path / "journal"
    gc = GroupCommitter(LocalJournal(d), max_delay=0.0, lock_linger=60.0)
    seq = gc.submit([b"x"], 0).result(timeout=10)
    opened = threading.Event()

    def second_writer() -> None:
        LocalJournal(d).close()
        opened.set()

    thread = threading.Thread(target=second_writer, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not opened.is_set():
        assert time.monotonic() < deadline, "a busy committer never gave the lock back"
        seq = gc.submit([b"x"], seq).result(timeout=10)
    thread.join(timeout=10)
    gc.close()
    assert LocalJournal(d, readonly=True).verify() == seq
