"""What a full collection leaves alone stays out of the collector's reach while orders arrive.

A full collection untracks a dict whose keys and values are all untracked; the next insert of a
freshly built ``(account, client_id)`` tuple tracked it again, so each later young and full
collection walked every order in it (15-24 ms per walk at ~80k orders in the server)."""

from __future__ import annotations

import gc

from bastion.api.read.model import ReadModel
from bastion.core import commands as C
from bastion.core.engine import Engine
from bastion.demo import BTC_USDT, demo_setup, stamp
from bastion.node.gcpolicy import FullCollections


def _place(engine: Engine, rm: ReadModel, first: int, n: int) -> None:
    cmds: list[C.Command] = [
        C.PlaceOrder(account=1 + i % 2, market=BTC_USDT, side="buy" if i % 2 else "sell",
                     price=(4_900_000 - i % 100) if i % 2 else (5_100_000 + i % 100), qty=1_000,
                     client_id=f"c-{i}")
        for i in range(first, first + n)]
    for cmd in stamp(cmds, start_seq=engine.seq + 1, start_ts=engine.ts + 1):
        rm.apply(engine.apply(cmd))


def test_order_indexes_by_client_id_stay_out_of_the_collectors_reach() -> None:
    engine = Engine()
    rm = ReadModel(lambda: engine)
    for cmd in stamp(demo_setup([1, 2])):
        rm.apply(engine.apply(cmd))
    _place(engine, rm, 0, 3_000)
    assert len(engine.orders) == 3_000
    full = FullCollections(sweep_every=0)
    try:
        full.run()
        _place(engine, rm, 3_000, 1_000)
        assert rm.order_by_client(2, "c-3001") is not None
        big = [(type(o).__name__, len(o)) for o in gc.get_objects()
               if isinstance(o, dict | list | set) and len(o) >= 1_000]
        assert big == []  # nothing holding every order was put back in a generation
        full.run()
        assert engine.find_order(2, BTC_USDT, 0, "c-3001").order_id == 3_002
    finally:
        gc.unfreeze()
