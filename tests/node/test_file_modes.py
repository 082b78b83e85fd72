"""Finding 10 (journal and snapshots): every file a node writes is 0600 and every directory it
creates 0700, whatever the umask; the journal and snapshots hold every account's orders and
balances."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.node import Node, NodeConfig
from bastion.node.workload import SpotWorkload, spot_setup

CFG = NodeConfig(
    segment_bytes=4 * 1024,
    snapshot_every_commands=50,
    snapshot_every_seconds=0,
    snapshot_keep=1,
    hugepage_collapse_min_rss_mb=0,
    gc_freeze_after_recovery=False,
    progress=False,
)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A permissive umask, so the modes seen are the ones the code asked for."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


async def _trade(data: Path) -> None:
    async with Node(data, config=CFG) as node:
        await node.submit_many(spot_setup(5))
        work = SpotWorkload(7, accounts=5)
        for _ in range(12):
            await node.submit_many(work.batch(40))
        await node.snapshot("pre-maintenance")


def test_journal_and_snapshot_files_are_private(tmp_path: Path, open_umask: None) -> None:
    data = tmp_path / "new" / "shard"
    asyncio.run(_trade(data))
    files = [p for p in data.rglob("*") if p.is_file()]
    dirs = [data, data.parent, *(p for p in data.rglob("*") if p.is_dir())]
    kinds = {p.parent.name for p in files}
    assert {"journal", "snapshots"} <= kinds, kinds
    assert any(p.parts[-3:-1] == ("archive", "journal") for p in files), "nothing was archived"
    assert any(p.suffix == ".seg" for p in files) and any(p.suffix == ".snap" for p in files)
    loose = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert {k: v for k, v in loose.items() if v != "0o600"} == {}
    open_dirs = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in dirs}
    assert {k: v for k, v in open_dirs.items() if v != "0o700"} == {}
