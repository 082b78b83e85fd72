"""A reader following recovery (``Follower``) gets the events of exactly the commands after its
own seq: a read model restored from a checkpoint costs the replay nothing before it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bastion.core import events as E
from bastion.core.engine import Engine
from bastion.node import Node, NodeConfig
from bastion.node.recovery import Follower
from bastion.node.workload import SpotWorkload, spot_setup

QUIET = NodeConfig(snapshot_every_commands=0, snapshot_every_seconds=0, progress=False)


def _journal(data: Path) -> tuple[int, int, str]:
    """A journal with a snapshot in the middle: (snapshot seq, last seq, state hash)."""

    async def run() -> tuple[int, int, str]:
        node = Node(data, config=QUIET)
        await node.start()
        await node.submit_many(spot_setup(10))
        work = SpotWorkload(3, accounts=10, tag="f-")
        await node.submit_many(work.batch(200))
        info = await node.snapshot()
        await node.submit_many(work.batch(200))
        last, state = node.engine.seq, node.engine.state_hash()
        await node.close()
        return info.seq, last, state

    return asyncio.run(run())


@pytest.mark.parametrize("offset", [0, 57, 200, 10_000])
def test_a_follower_gets_the_commands_after_its_seq_and_nothing_before(
        tmp_path: Path, offset: int) -> None:
    data = tmp_path / "data"
    snap, last, state = _journal(data)
    calls: list[list[E.Event]] = []
    at: list[int] = []

    def sink(engine: Engine) -> Follower:
        at.append(engine.seq)
        return Follower(engine.seq + offset, calls.append)

    node = Node(data, config=QUIET, recovery_sink=sink)
    try:
        assert at == [snap] and node.engine.state_hash() == state
        after = snap + offset
        assert len(calls) == max(0, last - after)
        seqs = [ev.seq for events in calls for ev in events]
        assert seqs == sorted(seqs) and all(after < s <= last for s in seqs)
        if after < last:
            assert seqs[0] == after + 1 and seqs[-1] == last
    finally:
        node.close_offline()
