"""A migration applied through a running node under load: no valid order refused, and the only
orders it cancels are the ones it declared (off its new grid)."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from pathlib import Path

from bastion.core import commands as C
from bastion.core import events as E
from bastion.core.migrations import resting
from bastion.demo import BTC_USDT
from bastion.node import Node, NodeConfig
from bastion.node.workload import spot_setup
from bastion.ops.migrations.spec import parse_migration, to_command

CFG = NodeConfig(snapshot_every_commands=0, snapshot_every_seconds=0, progress=False)
MID = 5_000_000
ACCOUNTS = 4
MIGRATION = b'''format = 1
id = "load-1"
description = "tick to 1.00 and a fee holiday, under load"
author = "test"

[[changes]]
kind = "tick"
market = "BTC-USDT"
tick_size = 100
on_conflict = "cancel"

[[changes]]
kind = "fees"
market = "BTC-USDT"
maker_fee_ppm = 0
taker_fee_ppm = 0
'''


async def _trader(node: Node, tag: int, stop: asyncio.Event,
                  results: list[tuple[C.PlaceOrder, list[E.Event]]]) -> None:
    """Valid orders under both the old and the new metadata: whole-dollar prices, whole lots."""
    rng = random.Random(tag)
    n = 0
    while not stop.is_set():
        n += 1
        side: C.Side = rng.choice(["buy", "sell"])
        off = rng.randrange(-3, 20) * 100
        price = MID - off if side == "buy" else MID + off
        cmd = C.PlaceOrder(account=rng.randrange(1, ACCOUNTS + 1), market=BTC_USDT, side=side,
                           price=price, qty=rng.randrange(1, 20) * 1_000, client_id=f"t{tag}-{n}")
        results.append((cmd, await node.submit(cmd)))
        await asyncio.sleep(0)


def test_migration_under_load_refuses_no_valid_order(tmp_path: Path) -> None:
    async def run() -> None:
        async with Node(tmp_path / "shard", config=CFG) as node:
            await node.submit_many(spot_setup(ACCOUNTS))
            seeded = [C.PlaceOrder(account=1, market=BTC_USDT, side="buy", price=MID - 5_007 - i,
                                   qty=1_000, client_id=f"off{i}") for i in range(25)]
            await node.submit_many(seeded)
            stop = asyncio.Event()
            results: list[tuple[C.PlaceOrder, list[E.Event]]] = []
            traders = [asyncio.create_task(_trader(node, i, stop, results))
                       for i in range(3)]
            await asyncio.sleep(0.3)
            off_grid = {o.order_id for o in resting(node.engine, BTC_USDT) if o.price % 100}
            events = await node.submit(to_command(parse_migration(MIGRATION)))
            await asyncio.sleep(0.3)
            stop.set()
            await asyncio.gather(*traders)
            assert isinstance(events[-1], E.MigrationApplied), events
            cancelled = {e.order_id for e in events if isinstance(e, E.OrderCanceled)}
            assert cancelled == off_grid and len(off_grid) >= 25
            assert events[-1].cancelled == len(cancelled)
            refused = [(c, ev) for c, ev in results if any(isinstance(e, E.Rejected) for e in ev)]
            assert len(results) > 100 and not refused, refused[:3]
            assert not ({e.order_id for _, evs in results for e in evs
                         if isinstance(e, E.OrderAccepted)} & cancelled)
            mkt = node.engine.markets[BTC_USDT]
            assert (mkt.tick_size, mkt.taker_fee_ppm) == (100, 0)
            assert not node.engine.check_invariants()

    asyncio.run(run())
    listed = subprocess.run([sys.executable, "-m", "bastion.cli.main", "migrate", "history",
                             "--data", str(tmp_path / "shard"), "--json"],
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    record = json.loads(listed.stdout)["records"][0]
    assert record["migration_id"] == "load-1" and len(record["cancelled"]) >= 25
    assert record["digest"] == parse_migration(MIGRATION).digest and not record["rolled_back_seq"]
