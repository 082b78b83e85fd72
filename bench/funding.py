"""Funding-tick probe: what one ``FundingTick`` costs with N open positions.

    python bench/funding.py --accounts 10000 100000 [--ticks 20] [--json]

Setup (``bench/perp_workload.setup``): N accounts with 5,000 USDT of cross margin, each holding
a position (pairs trade 0.01-0.5 BTC, so leverage 0.1x-5x). Each probe tick follows a fresh
index update one funding interval later; the tick alone is timed. Funding is lazy (the tick
moves the market's cumulative index; positions settle when touched), so the cost should not
grow with N. Each N runs twice: at the rate the market computes (interest, no premium) and at
the largest legal rate (the guard's bound), which drains the most leveraged accounts within a
few ticks and so re-checks (and may liquidate) some. The probe also reports how many accounts the tick re-checked (those whose
funding allowance in the liquidation index it used up) and checks the ledger afterwards.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bastion.core import commands as C  # noqa: E402
from bastion.core import events as E  # noqa: E402
from bastion.core.perp.liqindex import LiqIndex  # noqa: E402
from bastion.demo import BTC_USDT_PERP  # noqa: E402
from perp_workload import MID, index_cmd, setup  # noqa: E402


def probe(accounts: int, ticks: int, max_rate: bool = False) -> dict[str, object]:
    t0 = time.perf_counter()
    eng = setup(accounts)
    setup_s = time.perf_counter() - t0
    crossed: list[int] = []
    count = LiqIndex.crossed_funding

    def counting(self: LiqIndex, market: str, asset: str, index: int) -> list[int]:
        found = count(self, market, asset, index)
        crossed.extend(found)
        return found

    LiqIndex.crossed_funding = counting  # type: ignore[method-assign]
    gc.collect()
    gc.freeze()  # as the node does after recovery: the setup is long-lived, not garbage
    pm = eng.perp.markets[BTC_USDT_PERP]
    positions = len(eng.perp.positions[BTC_USDT_PERP])
    costs: list[float] = []
    rechecked = 0
    seq, ts = eng.seq, eng.ts
    for _ in range(ticks):
        ts += pm.funding_interval_ms
        seq += 1
        upd = index_cmd(MID, ts)
        upd.seq, upd.ts = seq, ts
        eng.apply(upd)
        seq += 1
        step = pm.max_funding_e9 * pm.mark // 1  # the largest legal move over one interval
        tick = C.FundingTick(market=BTC_USDT_PERP,
                             index=pm.funding_index + step if max_rate else None)
        tick.seq, tick.ts = seq, ts + 1
        start = time.perf_counter()
        events = eng.apply(tick)
        costs.append((time.perf_counter() - start) * 1e3)
        settled = [e for e in events if isinstance(e, E.FundingSettled)]
        assert settled and not settled[0].paused, events
        rechecked += len(crossed)
    gc.unfreeze()
    LiqIndex.crossed_funding = count  # type: ignore[method-assign]
    problems = eng.check_invariants()
    assert not problems, problems[:5]
    return {"accounts": accounts, "positions": positions, "ticks": ticks,
            "rate": "max" if max_rate else "premium/interest",
            "tick_ms_best": round(min(costs), 4), "tick_ms_median": round(statistics.median(costs), 4),
            "tick_ms_max": round(max(costs), 4), "accounts_rechecked": rechecked,
            "funding_index": pm.funding_index, "setup_s": round(setup_s, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--accounts", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--ticks", type=int, default=20)
    ap.add_argument("--json", action="store_true", help="one JSON object per line only")
    args = ap.parse_args()
    for n, max_rate in [(n, m) for n in args.accounts for m in (False, True)]:
        r = probe(n, args.ticks, max_rate)
        if not args.json:
            print(f"{r['positions']:>7} positions, {r['rate']:>16} rate: funding tick best {r['tick_ms_best']} ms, "
                  f"median {r['tick_ms_median']} ms, max {r['tick_ms_max']} ms over "
                  f"{r['ticks']} ticks; {r['accounts_rechecked']} accounts re-checked")
        print(json.dumps(r))


if __name__ == "__main__":
    main()
