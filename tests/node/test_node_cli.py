"""Operator CLI for the durable layer: real data directory, real ``bastion`` process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.journal.segments import list_segments
from bastion.node import Node, NodeConfig
from bastion.node.workload import SpotWorkload, spot_setup

# No archiving: the fixture's snapshot would otherwise race a background move of covered
# segments, and the tests below expect every segment in place.
CFG = NodeConfig(
    snapshot_every_commands=0,
    snapshot_every_seconds=0,
    segment_bytes=4096,
    progress=False,
    archive_covered_segments=False,
)


def bastion(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )


@pytest.fixture(scope="module")
def shard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("cli") / "shard"

    async def build() -> None:
        async with Node(data, config=CFG) as node:
            await node.submit_many(spot_setup(5))
            work = SpotWorkload(9, accounts=5)
            await node.submit_many(work.batch(300))
            await node.snapshot("pre-maintenance")
            await node.submit_many(work.batch(200))

    asyncio.run(build())
    return data


def test_journal_verify_and_inspect(shard: Path) -> None:
    ok = bastion("journal", "verify", "--data", str(shard))
    assert ok.returncode == 0, ok.stderr
    assert "journal OK: 520 records, seqs 1..520, epoch 1" in ok.stdout
    shown = bastion("journal", "inspect", "--data", str(shard), "--from", "7", "--to", "9")
    assert shown.returncode == 0, shown.stderr
    rows = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [r["seq"] for r in rows] == [7, 8, 9]
    assert rows[0]["command"]["type"] == "Deposit" and rows[0]["command"]["seq"] == 7


def test_snapshot_list_verify_and_replay(shard: Path) -> None:
    listed = bastion("snapshot", "list", "--data", str(shard))
    assert listed.returncode == 0 and "pre-maintenance" in listed.stdout
    verified = bastion("snapshot", "verify", "--data", str(shard))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "1 snapshot(s) verified" in verified.stdout
    replayed = bastion(
        "replay", "--data", str(shard), "--to-seq", "400", "--out-snapshot", "at-400"
    )
    assert replayed.returncode == 0, replayed.stderr
    assert "state hash at seq 400" in replayed.stdout
    again = bastion("snapshot", "verify", "at-400", "--data", str(shard))
    assert again.returncode == 0 and "OK   00000000000000000400-at-400" in again.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["journal", "verify", "--data", "/nonexistent/x"], "error: NO_DATA_DIR: "),
        (["snapshot", "verify", "nope"], "error: UNKNOWN_SNAPSHOT: no snapshot 'nope'"),
        (["replay", "--to-seq", "99999"], "error: SEQ_BEYOND_END: "),
        (["journal", "inspect", "--from", "5000"], "error: SEQ_BEYOND_END: "),
        (["rollback", "--to-snapshot", "nope", "--who", "a", "--why", "b"], "UNKNOWN_SNAPSHOT"),
        (["rollback", "--who", "a", "--why", "b"], "error: BAD_ARGUMENT: "),
        (["snapshot", "take", "--name", "Bad Name"], "error: BAD_SNAPSHOT_NAME: "),
    ],
)
def test_clean_errors(shard: Path, args: list[str], message: str) -> None:
    if "--data" not in args:
        args = [*args, "--data", str(shard)]
    result = bastion(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_corrupt_journal_is_named(tmp_path: Path, shard: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(shard, copy)
    seg = list_segments(copy / "journal")[1]
    raw = bytearray(seg.path.read_bytes())
    raw[30] ^= 0xFF
    seg.path.write_bytes(bytes(raw))
    result = bastion("journal", "verify", "--data", str(copy))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: JOURNAL_CORRUPT: segment {seg.name} offset 0 seq ")


def test_torn_tail_is_reported_not_fatal(tmp_path: Path, shard: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(shard, copy)
    seg = list_segments(copy / "journal")[-1]
    with open(seg.path, "r+b") as f:
        f.truncate(seg.path.stat().st_size - 7)
    result = bastion("journal", "verify", "--data", str(copy))
    assert result.returncode == 0, result.stderr
    assert "journal OK: 320 records" in result.stdout
    assert result.stderr.startswith(f"warning: torn tail in {seg.name} at offset ")


def test_take_and_rollback(tmp_path: Path, shard: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(shard, copy)
    took = bastion("snapshot", "take", "--data", str(copy), "--name", "manual")
    assert took.returncode == 0 and "-manual at seq 520" in took.stdout
    rolled = bastion(
        "rollback", "--data", str(copy), "--to-seq", "350", "--who", "ops", "--why", "drill"
    )
    assert rolled.returncode == 0, rolled.stderr
    assert "rolled back from seq 520 (epoch 1) to seq 350" in rolled.stdout
    ok = bastion("journal", "verify", "--data", str(copy))
    assert "seqs 1..350, epoch 2" in ok.stdout
