"""Perpetual workload for ``bench/core.py --workload perp``, and the mark-update cost probe.

    python bench/perp_workload.py --accounts 1000 10000     # mark update and funding tick cost
    python bench/core.py --workload perp --ops 200000        # throughput (10k accounts)

Setup: the demo spot markets, ``BTC-USDT-PERP``, N accounts with 5,000 USDT of cross margin
each and an open position each (pairs trade 0.01-0.5 BTC, so leverage 0.1x-5x and liquidation
prices are spread out). Stream: a mark (index) update every 100 commands (random walk of up to
+-5 bps), a funding tick every 20,000, and in between 35% cancels of live orders and limit
orders near the mark (about half of them cross, changing positions).
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bastion.core import commands as C  # noqa: E402
from bastion.core import events as E  # noqa: E402
from bastion.core.engine import Engine  # noqa: E402
from bastion.demo import BTC_USDT_PERP, demo_perp_setup, demo_setup, stamp  # noqa: E402

MID = 5_000_000          # 50,000.00 USDT
LOT = 100_000            # 0.001 BTC
TICK = 10
MARGIN = 5_000 * 10**8   # 5,000 USDT per account
_setups: dict[int, Engine] = {}


def index_cmd(price: int, ts: int) -> C.UpdateIndex:
    return C.UpdateIndex(market=BTC_USDT_PERP, sources=[
        C.SourcePrice(source="binance", price=price, ts=ts),
        C.SourcePrice(source="okx", price=price + TICK, ts=ts),
        C.SourcePrice(source="coinbase", price=price - TICK, ts=ts - 500)])


def setup(accounts: int, seed: int = 5) -> Engine:
    """An engine with ``accounts`` funded accounts, each holding a position (cached)."""
    if accounts in _setups:
        return Engine.from_state(_setups[accounts].export_state())
    rng = random.Random(seed)
    ids = list(range(1, accounts + 1))
    eng = Engine()
    # spot USDT: enough for the margin; total supply stays far below 2**62 at 100k accounts
    cmds = demo_setup(ids, usdt=10 * MARGIN) + demo_perp_setup(ids, margin=MARGIN)
    stamp(cmds)
    for cmd in cmds:
        eng.apply(cmd)
    seq, ts = eng.seq, eng.ts

    def do(cmd: C.Command) -> list[E.Event]:
        nonlocal seq, ts
        seq += 1
        ts += 1
        cmd.seq, cmd.ts = seq, ts
        return eng.apply(cmd)

    do(index_cmd(MID, ts + 1))
    for a in range(1, accounts, 2):
        qty = rng.randrange(10, 500) * LOT
        do(C.PlaceOrder(account=a + 1, market=BTC_USDT_PERP, side="sell", qty=qty, price=MID))
        events = do(C.PlaceOrder(account=a, market=BTC_USDT_PERP, side="buy", qty=qty,
                                 price=MID))
        assert any(isinstance(e, E.Trade) for e in events), events
    assert len(eng.perp.positions[BTC_USDT_PERP]) >= accounts - 1
    _setups[accounts] = eng
    return Engine.from_state(eng.export_state())


def gen_perp(n: int, accounts: int = 10_000, seed: int = 13) -> tuple[Engine, list[C.Command]]:
    """The measured engine and a stamped stream; a shadow engine keeps cancels on live orders
    and orders near the live mark."""
    rng = random.Random(seed)
    shadow = setup(accounts)
    engine = Engine.from_state(shadow.export_state())
    cmds: list[C.Command] = []
    live: list[int] = []
    seq, ts = shadow.seq, shadow.ts
    index = MID
    pm = shadow.perp.markets[BTC_USDT_PERP]
    for i in range(n):
        seq += 1
        ts += 1
        cmd: C.Command
        if i % 100 == 0:
            index = max(TICK, index * (10_000 + rng.randrange(-5, 6)) // 10_000)
            cmd = index_cmd(index, ts)
        elif i % 20_000 == 10_001:
            cmd = C.FundingTick(market=BTC_USDT_PERP)
        elif rng.random() < 0.35 and live:
            oid = 0
            while live and not oid:
                j = rng.randrange(len(live))
                live[j], live[-1] = live[-1], live[j]
                oid = live.pop()
                if oid not in shadow.orders:
                    oid = 0
            if not oid:
                seq -= 1
                ts -= 1
                continue
            cmd = C.CancelOrder(account=shadow.orders[oid].account, market=BTC_USDT_PERP,
                                order_id=oid)
        else:
            side = "buy" if rng.random() < 0.5 else "sell"
            off = rng.randrange(-20, 200) * TICK  # ~half cross the spread
            mark = pm.mark
            price = (mark - off if side == "buy" else mark + off) // TICK * TICK
            cmd = C.PlaceOrder(account=rng.randrange(1, accounts + 1), market=BTC_USDT_PERP,
                               side=side, qty=rng.randrange(1, 20) * LOT,  # type: ignore[arg-type]
                               price=price)
        cmd.seq, cmd.ts = seq, ts
        oid = shadow.next_order_id
        shadow.apply(cmd)
        if isinstance(cmd, C.PlaceOrder) and oid in shadow.orders:
            live.append(oid)
        cmds.append(cmd)
    return engine, cmds


def mark_update_cost(accounts: int, updates: int = 2_000, repeat: int = 3) -> dict[str, object]:
    """Microseconds per accepted mark update that crosses no liquidation threshold."""
    best = float("inf")
    popped = 0
    for _ in range(repeat):
        eng = setup(accounts)
        seq, ts = eng.seq, eng.ts
        stream: list[C.Command] = []
        for i in range(updates):
            seq += 1
            ts += 100
            cmd = index_cmd(MID + (i % 2) * TICK, ts)
            cmd.seq, cmd.ts = seq, ts
            stream.append(cmd)
        versions = {asset: dict(v) for asset, v in eng.perp.liq.version.items()}
        gc.collect()
        t0 = time.perf_counter()
        for cmd in stream:
            eng.apply(cmd)
        best = min(best, time.perf_counter() - t0)
        popped = sum(1 for asset, now in eng.perp.liq.version.items()
                     for account, v in now.items() if versions.get(asset, {}).get(account) != v)
    return {"accounts": accounts,
            "positions": len(eng.perp.positions[BTC_USDT_PERP]),
            "liq_index_entries": eng.perp.liq.size(BTC_USDT_PERP),
            "us_per_mark_update": round(best / updates * 1e6, 2),
            "accounts_rechecked": popped}


def funding_tick_cost(accounts: int) -> float:
    """Milliseconds for one funding tick (O(1) in positions: funding settles lazily;
    ``bench/funding.py`` probes it at 10k and 100k positions)."""
    eng = setup(accounts)
    seq, ts = eng.seq + 1, eng.ts + 1_000
    upd = index_cmd(MID, ts)
    upd.seq, upd.ts = seq, ts
    eng.apply(upd)
    tick = C.FundingTick(market=BTC_USDT_PERP)
    tick.seq, tick.ts = seq + 1, ts + 1
    t0 = time.perf_counter()
    events = eng.apply(tick)
    elapsed = time.perf_counter() - t0
    assert isinstance(events[-1], E.FundingSettled) and not events[-1].paused, events
    return round(elapsed * 1e3, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--accounts", type=int, nargs="+", default=[1_000, 10_000])
    args = ap.parse_args()
    for n in args.accounts:
        r = mark_update_cost(n)
        print(f"{r['accounts']:>6} accounts, {r['positions']} positions, "
              f"{r['liq_index_entries']} index entries: {r['us_per_mark_update']} us per mark "
              f"update ({r['accounts_rechecked']} accounts re-checked); one funding tick "
              f"{funding_tick_cost(n)} ms")


if __name__ == "__main__":
    main()
