"""Power loss: what SIGKILL cannot show.

SIGKILL leaves the page cache intact, so a missing fdatasync is invisible to the crash test.
Here the node runs the crash workload (tiny segments, fork snapshots every 100 commands,
retention and archiving, plus named snapshots an operator takes) on the power-loss file layer
(``powerloss_fs``), and the plug is pulled at a random sync: in the group-commit writer, in a
segment rollover, in recovery, in a snapshot child, in housekeeping. The tree is then replaced
by exactly what was durable, and:

- every acknowledged command is in the journal at its seq, byte for byte;
- every named snapshot the node reported written is there, and every snapshot present passes
  its checksums and carries the state hash a clean replay gives at its seq;
- the restarted node's state equals a clean replay of the journal in a fresh engine.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import pytest
import test_crash

from bastion.core.codec import decode_command, encode_command
from bastion.core.engine import Engine
from bastion.journal import DurabilityError, LocalJournal
from bastion.node import Node
from bastion.node.workload import SpotWorkload, spot_setup
from bastion.snapshots import SnapshotStore
from powerloss_fs import PowerLossFS

CUTS = int(os.environ.get("BASTION_POWER_CUTS", "200"))
EPISODE = 10  # cuts per fresh shard: keeps every clean replay short
MAX_K = 40  # the cut lands on a sync drawn from 1..MAX_K after arming
RUN_SECONDS = 3.0  # a run whose cut has not come by then is cut there
CFG = replace(  # the crash test's workload settings; no hugepage or GC tuning inside pytest
    test_crash.CFG, hugepage_collapse_min_rss_mb=0, gc_freeze_after_recovery=False
)


@dataclass
class Ledger:
    """What the node acknowledged: commands (seq -> journaled bytes) and named snapshots."""

    acked: dict[int, bytes] = field(default_factory=dict)
    snapshots: dict[str, int] = field(default_factory=dict)


@dataclass
class Tally:
    cuts: Counter[str] = field(default_factory=Counter)
    checks: int = 0
    acked: int = 0
    snapshots_checked: int = 0
    writeback: int = 0
    torn: int = 0
    from_snapshot: int = 0


def clean_replay(data: Path, want: set[int]) -> tuple[int, str, dict[int, bytes], dict[int, str]]:
    """Last seq, state hash, every record, and the state hash at each seq in ``want``."""
    engine = Engine()
    log: dict[int, bytes] = {}
    hashes: dict[int, str] = {}
    if not (data / "journal").is_dir():
        return 0, engine.state_hash(), log, hashes
    journal = LocalJournal(
        data / "journal", archive_dir=data / "archive" / "journal", readonly=True
    )
    try:
        for seq, payload in journal.read(1):
            log[seq] = payload
            engine.apply(decode_command(payload))
            if seq in want:
                hashes[seq] = engine.state_hash()
    finally:
        journal.close()
    return engine.seq, engine.state_hash(), log, hashes


def check(node: Node, data: Path, ledger: Ledger, label: str, tally: Tally) -> None:
    store = SnapshotStore(data / "snapshots")
    present = store.entries()
    last, state_hash, log, hashes = clean_replay(data, {i.seq for i in present})
    missing = sorted(s for s in ledger.acked if s not in log)
    assert not missing, f"{label}: acknowledged seqs lost: {missing[:10]} (journal ends {last})"
    wrong = sorted(s for s, raw in ledger.acked.items() if log[s] != raw)
    assert not wrong, f"{label}: acknowledged seqs hold other commands: {wrong[:10]}"
    names = {i.name: i.seq for i in present}
    lost = sorted(n for n, seq in ledger.snapshots.items() if names.get(n) != seq)
    assert not lost, f"{label}: acknowledged named snapshots lost: {lost}"
    for info in present:
        header, _payload = store.read(info)  # raises on any checksum damage
        assert info.seq <= last, f"{label}: snapshot {info.id} is beyond the journal ({last})"
        assert header.state_hash == hashes[info.seq], f"{label}: snapshot {info.id} hash"
    recovered = (node.last_seq, node.engine.state_hash())
    assert recovered == (last, state_hash), f"{label}: recovery diverged from a clean replay"
    tally.checks += 1
    tally.acked += len(ledger.acked)
    tally.snapshots_checked += len(present)
    tally.from_snapshot += node.recovery.snapshot is not None
    journal = node.journal
    tally.torn += isinstance(journal, LocalJournal) and journal.torn_tail_truncated > 0


async def workload(node: Node, sim: PowerLossFS, ledger: Ledger, run: int) -> bool:
    """Trade (and take named snapshots) until the power is cut; False if it had to be forced."""
    rng = random.Random(run)
    work = SpotWorkload(run * 7919 + 1, accounts=20, tag=f"r{run}-")

    async def guarded(step: Callable[[], Awaitable[object]]) -> bool:
        try:
            await step()
        except (DurabilityError, OSError):
            if not sim.dead:
                raise
            return False
        return True

    async def batches() -> None:
        while True:
            cmds = work.batch(rng.randrange(1, 40))
            if not await guarded(partial(node.submit_many, cmds)):
                return
            for cmd in cmds:
                ledger.acked[cmd.seq] = encode_command(cmd)

    async def singles() -> None:
        while True:
            cmd = work.next()
            if not await guarded(partial(node.submit, cmd)):
                return
            ledger.acked[cmd.seq] = encode_command(cmd)

    async def operator() -> None:
        for i in range(1_000_000):
            await asyncio.sleep(rng.uniform(0.0, 0.03))
            name = f"n{run}-{i}"
            try:
                info = await node.snapshot(name)
            except (DurabilityError, OSError):
                if not sim.dead:
                    raise
                return
            ledger.snapshots[name] = info.seq

    if node.last_seq == 0:
        setup = spot_setup(20)
        if not await guarded(partial(node.submit_many, setup)):
            return True
        for cmd in setup:
            ledger.acked[cmd.seq] = encode_command(cmd)
    tasks = [asyncio.ensure_future(t()) for t in (batches, batches, singles, singles, operator)]
    deadline = time.monotonic() + RUN_SECONDS
    while not sim.dead and time.monotonic() < deadline:
        if any(t.done() and t.exception() for t in tasks):
            break
        await asyncio.sleep(0.002)
    natural = sim.dead
    sim.cut_now()
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for outcome in results:
        if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
            raise outcome
    return natural


async def episode(
    root: Path, seed: int, cuts: int, tally: Tally, layer: type[PowerLossFS] = PowerLossFS
) -> None:
    rng = random.Random(seed)
    data = root / "shard"
    sim = layer(data, root / "durable")
    ledger = Ledger()
    for run in range(1, cuts + 1):
        label = f"seed {seed} run {run}"
        early = rng.random() < 0.2  # some cuts land in recovery itself
        if early:
            sim.arm(rng.randint(1, 6))
        try:
            node = Node(data, config=CFG, fs=sim)
        except (DurabilityError, OSError):
            if not sim.dead:
                raise
            tally.cuts["recovery"] += 1
            sim.restore()
            continue
        try:
            check(node, data, ledger, label, tally)
            if not early:
                sim.arm(rng.randint(1, MAX_K))
            await node.start()
            natural = await workload(node, sim, ledger, seed * 1000 + run)
        finally:
            sim.cut_now()
            await node.close()
        kind, in_child = sim.cut_info
        tally.cuts[(f"{kind} in a snapshot child" if in_child else kind) if natural else "forced"] += 1
        writeback = rng.random() < 0.5
        tally.writeback += writeback
        sim.restore(rng if writeback else None)
    node = Node(data, config=CFG, fs=sim)
    try:
        check(node, data, ledger, f"seed {seed} final", tally)
    finally:
        node.close_offline()


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """The simulated disk needs no real durability: on tmpfs when there is one (much faster on
    a busy machine), else under pytest's tmp_path."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="bastion-power-", dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_power_loss_keeps_every_acknowledgement(
    scratch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tally = Tally()
    t0 = time.perf_counter()
    done = 0
    seed = 1
    while done < CUTS:
        n = min(EPISODE, CUTS - done)
        asyncio.run(episode(scratch / f"e{seed}", seed, n, tally))
        done += n
        seed += 1
    total = sum(tally.cuts.values())
    assert total == CUTS
    assert tally.cuts["forced"] < CUTS // 10, f"too many runs never reached their cut: {tally}"
    assert tally.acked > 10 * CUTS
    with capsys.disabled():
        where = ", ".join(f"{k or 'forced'} {v}" for k, v in tally.cuts.most_common())
        print(
            f"\npower-loss test: {total} cuts ({where}); {tally.checks} checks of "
            f"{tally.acked} acknowledged commands and {tally.snapshots_checked} snapshots; "
            f"partial writeback kept in {tally.writeback}, torn tails truncated {tally.torn}, "
            f"restarts from a snapshot {tally.from_snapshot}; "
            f"{time.perf_counter() - t0:.1f} s"
        )



# --- the test can fail: the layer itself, and the harness against a node that skips a sync --


def test_layer_keeps_only_what_a_sync_covers(tmp_path: Path) -> None:
    root = tmp_path / "root"
    sim = PowerLossFS(root, tmp_path / "durable")
    sim.fsync_dir(root)
    a = sim.open(root / "a", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(a, b"synced")
    sim.fdatasync(a)
    os.write(a, b" not synced")
    b = sim.open(root / "b", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(b, b"data synced, name not")
    sim.fsync_dir(root)  # covers "a" and "b"
    c = sim.open(root / "c", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(c, b"name never synced")
    sim.fsync(c)
    os.rename(root / "a", root / "renamed")  # rename never synced
    for fd in (a, b, c):
        os.close(fd)
    sim.arm(1)
    with pytest.raises(OSError):
        sim.fsync_dir(root)
    assert sim.dead and sim.cut_info == ("fsync_dir", False)
    with pytest.raises(OSError):
        sim.open(root / "d", os.O_WRONLY | os.O_CREAT, 0o600)
    sim.restore()
    assert sorted(p.name for p in root.iterdir()) == ["a", "b"]
    assert (root / "a").read_bytes() == b"synced"
    assert (root / "b").read_bytes() == b""  # name durable, data never synced


def test_layer_makes_a_synced_rename_durable(tmp_path: Path) -> None:
    root = tmp_path / "root"
    sim = PowerLossFS(root, tmp_path / "durable")
    (root / "sub").mkdir()
    sim.fsync_dir(root)
    fd = sim.open(root / "sub" / "f.tmp", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"whole")
    sim.fsync(fd)
    os.close(fd)
    os.replace(root / "sub" / "f.tmp", root / "f")
    sim.fsync_dir(root)
    sim.cut_now()
    sim.restore()
    assert (root / "f").read_bytes() == b"whole"
    assert list((root / "sub").iterdir()) == []


class _SkipsDataSync(PowerLossFS):
    def fdatasync(self, fd: int) -> None:
        pass


class _SkipsDirSync(PowerLossFS):
    def fsync_dir(self, path: Path) -> None:
        self._check_alive("fsync_dir")


@pytest.mark.parametrize("layer", [_SkipsDataSync, _SkipsDirSync])
def test_harness_catches_a_missing_sync(scratch: Path, layer: type[PowerLossFS]) -> None:
    with pytest.raises((AssertionError, DurabilityError)):  # lost acks, or a corrupt journal
        asyncio.run(episode(scratch, 1, EPISODE, Tally(), layer))
