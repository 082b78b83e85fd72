"""Crash test with real processes: a node under continuous load is SIGKILLed at random moments
(tiny segments and frequent fork snapshots, so kills land in rollovers and snapshot writes too).
After every kill: each acknowledged command is in the journal at its seq, byte for byte, and
the state recovered by a restarted node equals a clean replay of the journal in a fresh engine.

Run as ``python tests/journal/test_crash.py DATA RUN`` it is the worker: it prints ``seq crc`` for each
command only after the node resolved its future (i.e. after fdatasync and apply).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import google_crc32c
import pytest

from bastion.core.codec import decode_command, encode_command
from bastion.core.engine import Engine
from bastion.journal import LocalJournal
from bastion.journal.segments import list_segments
from bastion.node import Node, NodeConfig
from bastion.node.workload import SpotWorkload, spot_setup

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("BASTION_CRASH_KILLS", "24"))
CFG = NodeConfig(
    segment_bytes=4 * 1024,
    snapshot_every_commands=100,
    snapshot_every_seconds=0,
    snapshot_keep=2,
    group_max_delay=0.0005,
    progress=False,
)


def _fingerprint(cmd_bytes: bytes) -> str:
    return f"{google_crc32c.value(cmd_bytes):08x}"


async def _worker(data: str, run: int) -> None:
    node = Node(data, config=CFG)
    await node.start()
    rng = random.Random(run)

    def ack(cmds: list) -> None:  # type: ignore[type-arg]
        lines = "".join(f"{c.seq} {_fingerprint(encode_command(c))}\n" for c in cmds)
        os.write(1, lines.encode())

    if node.last_seq == 0:
        setup = spot_setup(20)
        await node.submit_many(setup)
        ack(setup)
    work = SpotWorkload(run * 7919 + 1, accounts=20, tag=f"r{run}-")

    async def batches() -> None:
        while True:
            cmds = work.batch(rng.randrange(1, 40))
            await node.submit_many(cmds)
            ack(cmds)

    async def singles() -> None:
        while True:
            cmd = work.next()
            await node.submit(cmd)
            ack([cmd])

    await asyncio.gather(batches(), batches(), singles(), singles())


def _spawn(
    data: Path, run: int, *kill_at: str
) -> tuple[subprocess.Popen[bytes], list[bytes], threading.Thread]:
    proc = subprocess.Popen(
        [sys.executable, __file__, str(data), str(run), *kill_at],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    chunks: list[bytes] = []

    def pump() -> None:
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(65536):
            chunks.append(chunk)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    return proc, chunks, reader


def _wait_for_output(chunks: list[bytes], proc: subprocess.Popen[bytes], limit: float = 60) -> None:
    """Block until the worker has acknowledged something (or died, or `limit` passed)."""
    deadline = time.monotonic() + limit
    while not chunks and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)


def _has_children(pid: int) -> bool:
    """A forked snapshot writer is alive right now."""
    try:
        return bool(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    except OSError:
        return False


def _inside_rollover(journal: Path) -> bool:
    """The killed writer left a sealed last segment or a still-empty new one."""
    segments = list_segments(journal)
    return bool(segments) and (
        segments[-1].sealed_last is not None or segments[-1].path.stat().st_size == 0
    )


def _clean_replay(data: Path) -> tuple[int, str, dict[int, bytes]]:
    journal = LocalJournal(
        data / "journal", archive_dir=data / "archive" / "journal", readonly=True
    )
    engine = Engine()
    log: dict[int, bytes] = {}
    for seq, payload in journal.read(1):
        log[seq] = payload
        engine.apply(decode_command(payload))
    return engine.seq, engine.state_hash(), log


def _acks(chunks: list[bytes]) -> dict[int, str]:
    acked: dict[int, str] = {}
    for line in b"".join(chunks).decode().splitlines():
        seq_text, fp = line.split()
        acked[int(seq_text)] = fp
    return acked


def _check_after_kill(
    data: Path, acked_all: dict[int, str], label: str
) -> tuple[int, str | None, int]:
    """Restart recovery equals a clean replay, and every acknowledged command is in place."""
    node = Node(data, config=CFG)
    try:
        recovered = (node.last_seq, node.engine.state_hash())
        journal = node.journal
        truncated = journal.torn_tail_truncated if isinstance(journal, LocalJournal) else 0
        snapshot = node.recovery.snapshot
    finally:
        node.close_offline()
    last, clean_hash, log = _clean_replay(data)
    assert recovered == (last, clean_hash), f"{label}: recovery diverged from clean replay"
    missing = [s for s in acked_all if s not in log]
    assert not missing, f"{label}: acknowledged seqs lost: {missing[:10]}"
    wrong = [s for s, fp in acked_all.items() if _fingerprint(log[s]) != fp]
    assert not wrong, f"{label}: acknowledged seqs hold other commands: {wrong[:10]}"
    return last, snapshot, truncated


def test_sigkill_loses_no_acknowledged_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(20240601)
    data = tmp_path / "shard"
    acked_total = 0
    acked_all: dict[int, str] = {}
    kills = torn = mid_snapshot = mid_rollover = restarted_from_snapshot = during_startup = 0
    t0 = time.perf_counter()
    for run in range(1, KILLS + 1):
        proc, chunks, reader = _spawn(data, run)
        if run % 6:  # most kills land while trading, however slow start-up is on this machine
            _wait_for_output(chunks, proc)
        time.sleep(rng.uniform(0.2, 1.1))
        snapshotting = _has_children(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join(timeout=10)
        kills += 1
        mid_snapshot += snapshotting
        mid_rollover += _inside_rollover(data / "journal")
        acked = _acks(chunks)
        acked_total += len(acked)
        during_startup += not acked
        acked_all.update(acked)
        last, recovered_from, truncated = _check_after_kill(data, acked_all, f"run {run}")
        torn += truncated
        restarted_from_snapshot += recovered_from is not None
    assert acked_total > 1000
    with capsys.disabled():
        print(
            f"\ncrash test: {kills} SIGKILLs, {acked_total} acknowledged commands checked "
            f"({len(acked_all)} distinct seqs), journal at seq {last}; torn tails truncated "
            f"{torn}, kills while a snapshot child was writing {mid_snapshot}, kills inside a "
            f"segment rollover {mid_rollover}, kills before the "
            f"first ack (startup/recovery) {during_startup}, restarts from a snapshot "
            f"{restarted_from_snapshot}; {time.perf_counter() - t0:.1f} s"
        )


KILL_POINTS = {
    # module, attribute, what the files look like when the process group dies there
    "rollover-start": ("bastion.journal.local", "sealed_name"),  # old segment synced, not sealed
    "rollover-created": ("bastion.journal.local", "fsync_dir"),  # sealed + new empty segment
    "snapshot-half-written": ("bastion.snapshots.store", "write_all"),  # child mid tmp file
    "snapshot-renamed": ("bastion.snapshots.store", "fsync_dir"),  # renamed, dir not synced
    "archive-move": ("bastion.journal.local", "move_durable"),  # META says archived, not moved
    "after-fork": ("bastion.node.snapshotter", "_child"),  # child starts, then all die
}


def _arm(point: str, nth: int) -> None:
    """Worker side: SIGKILL the whole process group (node and snapshot child) the nth time
    execution reaches ``point``: a real kill at an exact step, no mock anywhere."""
    import importlib
    import mmap

    module_name, attr = KILL_POINTS[point]
    module = importlib.import_module(module_name)
    original = getattr(module, attr)
    hits = mmap.mmap(-1, 8)  # shared with forked snapshot children: one count for all

    def wrapper(*args: object, **kwargs: object) -> object:
        count = int.from_bytes(hits[:8], "little") + 1
        hits[:8] = count.to_bytes(8, "little")
        if count == nth:
            os.killpg(os.getpgrp(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(module, attr, wrapper)


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_sigkill_at_exact_steps(
    tmp_path: Path, point: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "shard"
    acked_all: dict[int, str] = {}
    for run, nth in enumerate((2, 5), start=1):
        proc, chunks, reader = _spawn(data, run, point, str(nth))
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"{point}: the worker never reached the kill point")
        reader.join(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        acked_all.update(_acks(chunks))
        last, _, _ = _check_after_kill(data, acked_all, f"{point} run {run}")
    with capsys.disabled():
        print(f" [{point}: 2 kills, {len(acked_all)} acknowledged commands intact, seq {last}]")


if __name__ == "__main__":
    if len(sys.argv) > 3:
        _arm(sys.argv[3], int(sys.argv[4]))
    asyncio.run(_worker(sys.argv[1], int(sys.argv[2])))
