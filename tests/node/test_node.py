"""The node: durable-before-ack ordering, recovery, fork snapshots, retention, fencing."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from pathlib import Path

import pytest

from bastion.core import commands as C
from bastion.core import events as E
from bastion.core.codec import decode_command, encode_command
from bastion.core.engine import Engine
from bastion.journal import FencedError, GroupCommitter, LocalJournal
from bastion.journal.errors import DurabilityError
from bastion.journal.fsutil import FileOps
from bastion.node import Node, NodeConfig
from bastion.node.workload import SpotWorkload, spot_setup
from bastion.snapshots import SnapshotStore

QUIET = NodeConfig(snapshot_every_commands=0, snapshot_every_seconds=0, progress=False)


def clean_replay_hash(data: Path) -> tuple[int, str]:
    engine = Engine()
    journal = LocalJournal(
        data / "journal", archive_dir=data / "archive" / "journal", readonly=True
    )
    for _seq, payload in journal.read(1):
        engine.apply(decode_command(payload))
    return engine.seq, engine.state_hash()


async def run_load(node: Node, n: int, seed: int = 1) -> None:
    await node.submit_many(spot_setup(10)) if node.last_seq == 0 else None
    work = SpotWorkload(seed, accounts=10, tag=f"s{seed}-")
    pending = [node.submit_many(work.batch(50)) for _ in range(n // 50)]
    await asyncio.gather(*pending)


def test_ack_only_after_journal_has_it(tmp_path: Path) -> None:
    async def main() -> None:
        async with Node(tmp_path, config=QUIET) as node:
            seen: list[list[E.Event]] = []
            node.subscribe(seen.append)
            events = await node.submit(C.CreateAsset(asset="USDT", decimals=8))
            assert [type(e) for e in events] == [E.AssetCreated] and events[0].seq == 1
            ro = LocalJournal(tmp_path / "journal", readonly=True)
            [(seq, payload)] = list(ro.read(1))
            assert seq == 1 and decode_command(payload) == C.CreateAsset(
                asset="USDT", decimals=8, seq=1, ts=events[0].ts
            )
            assert seen == [events]
            results = await node.submit_many(spot_setup(3))
            assert node.last_seq == 1 + len(results) and node.engine.seq == node.last_seq
            rejected = await node.submit(C.CreateAsset(asset="USDT", decimals=8))
            assert isinstance(rejected[0], E.Rejected) and rejected[0].code == "ASSET_EXISTS"
            assert node.epoch == 1

    asyncio.run(main())


def test_concurrent_single_submits_share_batches(tmp_path: Path) -> None:
    async def main() -> int:
        async with Node(tmp_path, config=QUIET) as node:
            await node.submit_many(spot_setup(10))
            work = SpotWorkload(3, accounts=10)
            results = await asyncio.gather(*(node.submit(work.next()) for _ in range(300)))
            seqs = [r[0].seq for r in results]
            assert seqs == sorted(seqs) and len(set(seqs)) == 300
            assert node._committer is not None
            return node._committer.batches

    batches = asyncio.run(main())
    assert batches < 100


def test_restart_recovers_identical_state(tmp_path: Path) -> None:
    async def first() -> str:
        async with Node(tmp_path, config=QUIET) as node:
            await run_load(node, 2000)
            return node.engine.state_hash()

    before = asyncio.run(first())
    node = Node(tmp_path, config=QUIET)
    try:
        assert node.engine.state_hash() == before
        assert node.recovery.snapshot is None and node.recovery.replayed == node.last_seq
        assert "recovered seq" in node.recovery.summary()
    finally:
        node.close_offline()
    assert clean_replay_hash(tmp_path)[1] == before


def test_fork_snapshots_retention_archive_and_fast_restart(tmp_path: Path) -> None:
    cfg = NodeConfig(
        snapshot_every_commands=400,
        snapshot_every_seconds=0,
        snapshot_keep=2,
        segment_bytes=8 * 1024,
        progress=False,
    )

    async def main() -> tuple[str, list[float]]:
        async with Node(tmp_path, config=cfg) as node:
            await run_load(node, 1000)
            named = await node.snapshot("pre-maintenance")
            assert named.seq == node.last_seq
            for seed in range(2, 6):
                await run_load(node, 800, seed)
                while node._snapshotter is not None and node._snapshotter.busy:
                    await asyncio.sleep(0.01)
            await node.snapshot()
            return node.engine.state_hash(), node.snapshot_pauses

    final, pauses = asyncio.run(main())
    assert len(pauses) >= 3 and max(pauses) < 0.5
    infos = SnapshotStore(tmp_path / "snapshots").entries()
    assert sum(not i.named for i in infos) == 2
    assert [i.name for i in infos if i.named] == ["pre-maintenance"]
    archived = list((tmp_path / "archive" / "journal").glob("*.seg"))
    assert archived, "segments covered by the oldest kept snapshot are archived"
    node = Node(tmp_path, config=cfg)
    try:
        assert node.engine.state_hash() == final
        assert node.recovery.snapshot == infos[-1].id and node.recovery.replayed == 0
    finally:
        node.close_offline()
    assert clean_replay_hash(tmp_path)[1] == final


def test_damaged_or_forged_snapshot_is_skipped(tmp_path: Path) -> None:
    async def main() -> str:
        async with Node(tmp_path, config=QUIET) as node:
            await run_load(node, 600)
            await node.snapshot()
            await run_load(node, 600, 2)
            await node.snapshot()
            return node.engine.state_hash()

    final = asyncio.run(main())
    store = SnapshotStore(tmp_path / "snapshots")
    older, newest = store.entries()
    header, payload = store.read(newest)
    newest.path.unlink()
    store.write(
        seq=header.seq,
        term=header.term,
        state_hash="0" * 64,
        payload=payload,
        created_ms=header.created_ms,
    )
    node = Node(tmp_path, config=QUIET)
    try:
        assert node.recovery.snapshot == older.id
        assert node.engine.state_hash() == final
    finally:
        node.close_offline()


def test_second_node_and_stale_writer_are_refused(tmp_path: Path) -> None:
    async def main() -> None:
        async with Node(tmp_path, config=QUIET) as node:
            await node.submit_many(spot_setup(2))
            with pytest.raises(DurabilityError) as err:
                Node(tmp_path, config=QUIET)
            assert err.value.code == "NODE_RUNNING"
            intruder = LocalJournal(tmp_path / "journal")
            intruder.append([encode_command(C.CreateAsset(asset="X", decimals=1))], node.last_seq)
            before = node.engine.state_hash()
            with pytest.raises(FencedError):
                await node.submit(C.CreateAsset(asset="Y", decimals=1))
            assert node.engine.state_hash() == before
            with pytest.raises(DurabilityError) as again:
                await node.submit(C.CreateAsset(asset="Z", decimals=1))
            assert again.value.code == "FENCED"

    asyncio.run(main())


def test_bad_input_gets_a_code(tmp_path: Path) -> None:
    async def main() -> None:
        async with Node(tmp_path, config=QUIET) as node:
            with pytest.raises(DurabilityError) as err:
                await node.submit("not a command")  # type: ignore[arg-type]
            assert err.value.code == "BAD_COMMAND"
            with pytest.raises(DurabilityError) as err2:
                await node.snapshot("Bad Name")
            assert err2.value.code == "BAD_SNAPSHOT_NAME"

    asyncio.run(main())
    node = Node(tmp_path, config=QUIET)
    with pytest.raises(DurabilityError) as err3:
        node.submit_many([C.CreateAsset(asset="X", decimals=1)])
    assert err3.value.code == "NODE_NOT_STARTED"
    node.close_offline()


def test_timestamps_never_go_backwards(tmp_path: Path) -> None:
    times = iter([1000, 900, 1200, 1100])

    async def main() -> list[int]:
        async with Node(tmp_path, config=QUIET, clock=lambda: next(times)) as node:
            stamps = []
            for i in range(4):
                events = await node.submit(C.CreateAsset(asset=f"A{i}", decimals=2))
                stamps.append(events[0].ts)
            return stamps

    assert asyncio.run(main()) == [1000, 1000, 1200, 1200]


class _SyncFailsAfter(FileOps):
    """Real files; ``fdatasync`` raises EIO from its ``n``-th call on (a dying disk)."""

    def __init__(self, n: int) -> None:
        self.left = n

    def fdatasync(self, fd: int) -> None:  # type: ignore[override]
        self.left -= 1
        if self.left < 0:
            raise OSError(errno.EIO, "injected: disk gone")
        os.fdatasync(fd)


def test_a_journal_failure_reaches_every_waiting_submit(tmp_path: Path) -> None:
    """``submit`` callers are answered by ``_drain`` itself: when the journal fails, each of
    them gets the error (none hangs, none gets a result), and later submits are refused."""

    async def main() -> None:
        fs = _SyncFailsAfter(1_000_000)
        node = Node(tmp_path, config=QUIET, fs=fs)
        await node.start()
        await node.submit_many(spot_setup(10))
        fs.left = 1  # one more batch is synced, then the disk is gone
        work = SpotWorkload(5, accounts=10)
        first = [await node.submit(work.next())]
        waiting = []
        for i in range(400):
            waiting.append(asyncio.ensure_future(node.submit(work.next())))
            if i % 10 == 9:
                await asyncio.sleep(0)  # the next ten go into another batch
        outcomes = first + await asyncio.wait_for(
            asyncio.gather(*waiting, return_exceptions=True), 30)
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        assert failed and all(isinstance(o, DurabilityError) for o in failed)
        ok = [o for o in outcomes if not isinstance(o, BaseException)]
        assert ok and all(o[0].seq <= node.last_seq for o in ok)  # acknowledged = applied
        assert node.failure is not None
        with pytest.raises(DurabilityError):
            await node.submit(work.next())
        await node.close()

    asyncio.run(main())


def test_batches_made_durable_together_are_published_once(tmp_path: Path) -> None:
    """Three requests (three loop turns' worth) that are durable before the loop next runs are
    applied, answered and published in one call, in sequence order: subscribers (book diffs,
    fan-out) pay per wake-up, not per loop turn that submitted."""

    async def main() -> None:
        async with Node(tmp_path, config=QUIET) as node:
            await node.submit_many(spot_setup(10))
            seen: list[list[E.Event]] = []
            node.subscribe(seen.append)
            work = SpotWorkload(7, accounts=10)
            base = node.last_seq
            futures = [node.submit_many(work.batch(5)) for _ in range(3)]
            committer = node.committer
            assert committer is not None
            deadline = time.monotonic() + 30
            while committer.records < base + 15:  # the loop is held: nothing is drained yet
                assert time.monotonic() < deadline, "the journal never made the batches durable"
                time.sleep(0.005)
            assert node.last_seq == base
            results = await asyncio.gather(*futures)
            assert len(seen) == 1
            assert seen[0] == [e for batch in results for events in batch for e in events]
            assert [e.seq for e in seen[0]] == sorted(e.seq for e in seen[0])
            assert node.last_seq == base + 15

    asyncio.run(main())


def test_writer_yields_reaches_the_journal_writer(tmp_path: Path) -> None:
    """``NodeConfig.writer_yields`` (``BASTION_WRITER_YIELDS``) is the committer's
    ``yield_to_waker``: the node's writer thread then runs ``SCHED_BATCH``."""
    if not hasattr(os, "sched_getscheduler"):
        pytest.skip("no scheduling policies on this platform")

    async def main() -> None:
        config = NodeConfig(snapshot_every_commands=0, snapshot_every_seconds=0,
                            progress=False, writer_yields=True)
        async with Node(tmp_path, config=config) as node:
            await node.submit(C.CreateAsset(asset="USDT", decimals=8))
            committer = node.committer
            assert isinstance(committer, GroupCommitter) and committer._thread.native_id
            assert os.sched_getscheduler(committer._thread.native_id) == os.SCHED_BATCH

    asyncio.run(main())


def test_a_snapshot_forks_without_collapsing_the_heap_unless_configured(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each 2 MiB step of a collapse held the CPU ~18 ms on a kernel without preemption in
    kernel code, stalling a pinned loop for seconds: by default a snapshot only forks."""
    from bastion.node import node as node_module

    called: list[bool] = []
    monkeypatch.setattr(node_module, "collapse_heap", lambda idle=False: called.append(idle))
    cfg = NodeConfig(snapshot_every_commands=0, snapshot_every_seconds=0, progress=False)
    assert cfg.hugepage_collapse_min_rss_mb == 0

    async def main() -> None:
        async with Node(tmp_path, config=cfg) as node:
            await run_load(node, 100)
            info = await asyncio.wait_for(node.snapshot("plain"), 20)
            assert info.seq == node.last_seq and node.snapshot_pauses

    asyncio.run(main())
    assert called == []


def test_a_snapshot_forks_without_a_collapse_starved_past_its_wait(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The huge-page collapse before a snapshot runs at idle priority, so a loop that never
    waits starves it: the snapshot forks after ``hugepage_collapse_wait`` anyway, and the
    collapse's outcome is still recorded when it ends."""
    import threading

    from bastion.node import node as node_module
    from bastion.node.hugepages import CollapseResult

    release = threading.Event()
    asked: list[bool] = []

    def starved(idle: bool = False) -> CollapseResult:
        asked.append(idle)
        release.wait(30)
        return CollapseResult(True, 1, 2 * 1024 * 1024, 0.0)

    monkeypatch.setattr(node_module, "collapse_heap", starved)
    cfg = NodeConfig(snapshot_every_commands=0, snapshot_every_seconds=0, progress=False,
                     hugepage_collapse_min_rss_mb=1, hugepage_collapse_wait=0.2)

    async def main() -> None:
        async with Node(tmp_path, config=cfg) as node:
            await run_load(node, 100)
            t0 = time.monotonic()
            info = await asyncio.wait_for(node.snapshot("starved"), 20)
            assert info.seq == node.last_seq and time.monotonic() - t0 >= 0.2
            assert asked == [True] and node.collapses == []
            release.set()
            while not node.collapses:
                await asyncio.sleep(0.01)
            assert node.collapses[0].ranges == 1

    asyncio.run(main())
