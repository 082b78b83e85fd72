"""A journal that stops acknowledging shows as a growing pending age (the status page's
"journal not acknowledging" signal); an idle journal never does."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from bastion.core import commands as C
from bastion.journal import LocalJournal
from bastion.node import Node, NodeConfig

QUIET = NodeConfig(snapshot_every_commands=0, snapshot_every_seconds=0, progress=False)


class StallingJournal(LocalJournal):
    """A real local journal whose disk can be made to hang (like a stuck fsync)."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.flowing = threading.Event()
        self.flowing.set()

    def append_framed(self, batches, expected_last_seq):  # type: ignore[no-untyped-def]
        self.flowing.wait()
        return super().append_framed(batches, expected_last_seq)


def test_pending_age_tracks_a_stalled_journal(tmp_path: Path) -> None:
    async def main() -> None:
        journal = StallingJournal(tmp_path / "journal", archive_dir=tmp_path / "archive")
        async with Node(tmp_path, config=QUIET, journal=journal) as node:
            await node.submit(C.CreateAsset(asset="USDT", decimals=8))
            await asyncio.sleep(0.2)
            assert node.pending_age() == 0.0  # idle is healthy
            journal.flowing.clear()
            pending = asyncio.ensure_future(node.submit(C.CreateAsset(asset="BTC", decimals=8)))
            await asyncio.sleep(0.3)
            assert node.pending_age() >= 0.25 and not pending.done()
            journal.flowing.set()
            events = await pending
            assert events[0].seq == 2 and node.pending_age() == 0.0

    asyncio.run(main())
