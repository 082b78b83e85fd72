"""Point-in-time rollback: state equals the state at the target, the tail is archived intact,
the new epoch continues, the decision is audited, and an interrupted rollback is finished."""

from __future__ import annotations

import asyncio
import importlib
import json
from pathlib import Path

import pytest

from bastion.core import commands as C
from bastion.core.codec import decode_command
from bastion.core.engine import Engine
from bastion.journal import LocalJournal
from bastion.journal.errors import DurabilityError
from bastion.journal.framing import Block, parse
from bastion.journal.segments import list_segments
from bastion.node import Node, NodeConfig, audit_log, rollback
from bastion.node.workload import SpotWorkload, spot_setup
from bastion.snapshots import SnapshotStore

rollback_module = importlib.import_module("bastion.node.rollback")

CFG = NodeConfig(
    snapshot_every_commands=0, snapshot_every_seconds=0, segment_bytes=4096, progress=False
)


def records(data: Path) -> dict[int, bytes]:
    j = LocalJournal(data / "journal", archive_dir=data / "archive" / "journal", readonly=True)
    return dict(j.read(1))


def frames_in(directory: Path) -> dict[int, bytes]:
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


def state_at(log: dict[int, bytes], seq: int) -> str:
    engine = Engine()
    for s in range(1, seq + 1):
        engine.apply(decode_command(log[s]))
    return engine.state_hash()


async def build(data: Path) -> tuple[int, str]:
    async with Node(data, config=CFG) as node:
        await node.submit_many(spot_setup(8))
        work = SpotWorkload(5, accounts=8)
        await node.submit_many(work.batch(400))
        snap = await node.snapshot("pre-maintenance")
        at_snap = node.engine.state_hash()
        for _ in range(6):
            await node.submit_many(work.batch(100))
        return snap.seq, at_snap


def test_rollback_to_named_snapshot(tmp_path: Path) -> None:
    snap_seq, at_snap = asyncio.run(build(tmp_path))
    before = records(tmp_path)
    last = max(before)
    report = rollback(tmp_path, to_snapshot="pre-maintenance", who="alice", why="bad maintenance")
    assert (report.from_seq, report.to_seq, report.from_epoch, report.to_epoch) == (
        last,
        snap_seq,
        1,
        2,
    )
    assert report.state_hash == at_snap
    archived = frames_in(tmp_path / report.archive / "journal")
    assert {s: archived[s] for s in range(snap_seq + 1, last + 1)} == {
        s: before[s] for s in range(snap_seq + 1, last + 1)
    }

    async def resume() -> None:
        async with Node(tmp_path, config=CFG) as node:
            assert node.engine.state_hash() == at_snap
            assert (node.last_seq, node.epoch) == (snap_seq, 2)
            events = await node.submit(C.CreateAsset(asset="NEW", decimals=2))
            assert events[0].seq == snap_seq + 1

    asyncio.run(resume())
    after = records(tmp_path)
    assert max(after) == snap_seq + 1
    assert all(after[s] == before[s] for s in range(1, snap_seq + 1))
    j = LocalJournal(tmp_path / "journal", readonly=True)
    assert (j.term_at(snap_seq), j.term_at(snap_seq + 1)) == (1, 2)
    [entry] = audit_log(tmp_path)
    assert (entry["who"], entry["why"], entry["from_seq"], entry["to_seq"]) == (
        "alice",
        "bad maintenance",
        last,
        snap_seq,
    )


def test_rollback_to_seq_equals_clean_replay_and_archives_later_snapshots(tmp_path: Path) -> None:
    asyncio.run(build(tmp_path))

    async def more_snapshots() -> None:
        async with Node(tmp_path, config=CFG) as node:
            await node.snapshot()

    asyncio.run(more_snapshots())
    before = records(tmp_path)
    target = max(before) - 237
    expected = state_at(before, target)
    report = rollback(tmp_path, to_seq=target, who="bob", why="funding index reset")
    assert report.state_hash == expected
    moved = list((tmp_path / report.archive / "snapshots").glob("*.snap"))
    assert moved and all(int(p.name[:20]) > target for p in moved)
    assert all(i.seq <= target for i in SnapshotStore(tmp_path / "snapshots").entries())
    node = Node(tmp_path, config=CFG)
    try:
        assert node.engine.state_hash() == expected and node.last_seq == target
        assert node.recovery.replayed == 0
    finally:
        node.close_offline()


def test_interrupted_rollback_is_finished_on_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snap_seq, at_snap = asyncio.run(build(tmp_path))

    def crash(*_args: object) -> None:
        raise KeyboardInterrupt("simulated crash after the intent was written")

    monkeypatch.setattr(rollback_module, "_execute", crash)
    with pytest.raises(KeyboardInterrupt):
        rollback(tmp_path, to_snapshot="pre-maintenance", who="carol", why="drill")
    assert (tmp_path / "ROLLBACK.json").exists()
    monkeypatch.undo()
    node = Node(tmp_path, config=CFG)
    try:
        assert node.engine.state_hash() == at_snap and node.epoch == 2
    finally:
        node.close_offline()
    assert not (tmp_path / "ROLLBACK.json").exists()
    intent = audit_log(tmp_path)
    assert [e["who"] for e in intent] == ["carol"]
    # finishing twice (crash just before the intent was removed) changes nothing
    (tmp_path / "ROLLBACK.json").write_text(json.dumps(intent[0]))
    node = Node(tmp_path, config=CFG)
    node.close_offline()
    assert len(audit_log(tmp_path)) == 1 and node.engine.state_hash() == at_snap


def test_rollback_errors_are_clean(tmp_path: Path) -> None:
    asyncio.run(build(tmp_path))
    cases = [
        ({"to_snapshot": "nope"}, "UNKNOWN_SNAPSHOT"),
        ({"to_seq": 10**9}, "SEQ_BEYOND_END"),
        ({"to_seq": -1}, "SEQ_BEYOND_END"),
        ({}, "BAD_ARGUMENT"),
        ({"to_seq": 1, "to_snapshot": "pre-maintenance"}, "BAD_ARGUMENT"),
    ]
    for kwargs, code in cases:
        with pytest.raises(DurabilityError) as err:
            rollback(tmp_path, who="x", why="y", **kwargs)  # type: ignore[arg-type]
        assert err.value.code == code
    with pytest.raises(DurabilityError) as err2:
        rollback(tmp_path / "missing", to_seq=1, who="x", why="y")
    assert err2.value.code == "NO_DATA_DIR"

    async def running() -> None:
        async with Node(tmp_path, config=CFG):
            with pytest.raises(DurabilityError) as err3:
                rollback(tmp_path, to_seq=1, who="x", why="y")
            assert err3.value.code == "NODE_RUNNING"

    asyncio.run(running())
