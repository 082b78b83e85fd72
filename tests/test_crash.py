"""Crash test with real processes: a node under continuous load is SIGKILLed at random moments
(tiny segments and frequent fork snapshots, so kills land in rollovers and snapshot writes too).
After every kill: each acknowledged command is in the journal at its seq, byte for byte, and
the state recovered by a restarted node equals a clean replay of the journal in a fresh engine.

Run as ``python tests/test_crash.py DATA RUN`` it is the worker: it prints ``seq crc`` for each
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
from bastion.node import Node, NodeConfig
from bastion.node.workload import SpotWorkload, spot_setup

KILLS = int(os.environ.get("BASTION_CRASH_KILLS", "24"))
CFG = NodeConfig(
    segment_bytes=12 * 1024,
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


def _spawn(data: Path, run: int) -> tuple[subprocess.Popen[bytes], list[bytes], threading.Thread]:
    proc = subprocess.Popen(
        [sys.executable, __file__, str(data), str(run)],
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


def _has_children(pid: int) -> bool:
    """A forked snapshot writer is alive right now."""
    try:
        return bool(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    except OSError:
        return False


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


def test_sigkill_loses_no_acknowledged_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(20240601)
    data = tmp_path / "shard"
    acked_total = 0
    acked_all: dict[int, str] = {}
    kills = torn = mid_snapshot = restarted_from_snapshot = during_startup = 0
    t0 = time.perf_counter()
    for run in range(1, KILLS + 1):
        proc, chunks, reader = _spawn(data, run)
        time.sleep(rng.uniform(0.2, 1.1))
        snapshotting = _has_children(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join(timeout=10)
        kills += 1
        mid_snapshot += snapshotting
        acked: dict[int, str] = {}
        for line in b"".join(chunks).decode().splitlines():
            seq_text, fp = line.split()
            acked[int(seq_text)] = fp
        acked_total += len(acked)
        during_startup += not acked
        acked_all.update(acked)

        node = Node(data, config=CFG)
        try:
            recovered = (node.last_seq, node.engine.state_hash())
            torn += node.journal.torn_tail_truncated if isinstance(node.journal, LocalJournal) else 0
            restarted_from_snapshot += node.recovery.snapshot is not None
        finally:
            node.close_offline()
        last, clean_hash, log = _clean_replay(data)
        assert recovered == (last, clean_hash), f"run {run}: recovery diverged from clean replay"
        missing = [s for s in acked_all if s not in log]
        assert not missing, f"run {run}: acknowledged seqs lost: {missing[:10]}"
        wrong = [s for s, fp in acked_all.items() if _fingerprint(log[s]) != fp]
        assert not wrong, f"run {run}: acknowledged seqs hold other commands: {wrong[:10]}"
    assert acked_total > 1000
    with capsys.disabled():
        print(
            f"\ncrash test: {kills} SIGKILLs, {acked_total} acknowledged commands checked "
            f"({len(acked_all)} distinct seqs), journal at seq {last}; torn tails truncated "
            f"{torn}, kills while a snapshot child was writing {mid_snapshot}, kills before the "
            f"first ack (startup/recovery) {during_startup}, restarts from a snapshot "
            f"{restarted_from_snapshot}; {time.perf_counter() - t0:.1f} s"
        )


if __name__ == "__main__":
    asyncio.run(_worker(sys.argv[1], int(sys.argv[2])))
