"""Funding-tick probe: what one ``FundingTick`` costs with N open positions.

    python bench/funding.py --accounts 10000 100000 [--ticks 20] [--updates 100] [--json]

Setup (``bench/perp_workload.setup``): N accounts with 5,000 USDT of cross margin, each holding
a position (pairs trade 0.01-0.5 BTC, so leverage 0.1x-5x). Between two ticks, one funding
interval apart, come ``--updates`` index updates (a live venue sends one every second or so:
28,800 per 8 h interval; the default 100 is far fewer); the tick alone is timed, and the index
updates are timed too, since they carry the soft re-checks a tick leaves behind. Funding is lazy
(the tick moves the market's cumulative index; positions settle when touched), so the cost
should not grow with N. Each N runs twice: at the rate the market computes (interest, no
premium) and at the largest legal rate (the guard's bound), which drains the most leveraged
accounts within a few ticks and so re-checks (and may liquidate) some. Reported: re-checks the
ticks did themselves (hard funding keys crossed) and those spread over the following commands
(soft keys, at most ``RECHECKS_PER_COMMAND`` each); the ledger is audited afterwards.
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
from bastion.node.gcpolicy import apply_gc_policy  # noqa: E402
from perp_workload import MID, index_cmd, setup  # noqa: E402


def probe(accounts: int, ticks: int, max_rate: bool = False, updates: int = 100
          ) -> dict[str, object]:
    t0 = time.perf_counter()
    eng = setup(accounts)
    setup_s = time.perf_counter() - t0
    hard: list[int] = []
    soft: list[int] = []
    count_hard = LiqIndex.crossed_funding
    count_soft = LiqIndex.drain_funding

    def counting_hard(self: LiqIndex, market: str, asset: str, index: int) -> list[int]:
        found = count_hard(self, market, asset, index)
        hard.extend(found)
        return found

    def counting_soft(self: LiqIndex, market: str, asset: str, index: int, limit: int
                      ) -> tuple[list[int], bool]:
        found, more = count_soft(self, market, asset, index, limit)
        soft.extend(found)
        return found, more

    LiqIndex.crossed_funding = counting_hard  # type: ignore[method-assign]
    LiqIndex.drain_funding = counting_soft  # type: ignore[method-assign]
    gc.collect()
    thresholds = gc.get_threshold()
    gc.freeze()  # as the node does after recovery: the setup is long-lived, not garbage
    apply_gc_policy()  # and as it runs: no full collection on the command path
    pm = eng.perp.markets[BTC_USDT_PERP]
    positions = len(eng.perp.positions[BTC_USDT_PERP])
    costs: list[float] = []
    cpu: list[float] = []  # thread CPU time: what the tick cost, without the machine's preemption
    update_costs: list[float] = []
    update_cpu: list[float] = []
    liquidated = 0
    seq, ts = eng.seq, eng.ts
    gap = pm.funding_interval_ms // max(updates, 1)
    for _ in range(ticks):
        for _ in range(max(updates, 1)):
            ts += gap
            seq += 1
            upd = index_cmd(MID, ts)
            upd.seq, upd.ts = seq, ts
            start, start_cpu = time.perf_counter(), time.thread_time()
            events = eng.apply(upd)
            update_costs.append((time.perf_counter() - start) * 1e3)
            update_cpu.append((time.thread_time() - start_cpu) * 1e3)
            liquidated += sum(isinstance(e, E.Liquidated) for e in events)
        seq += 1
        step = pm.max_funding_e9 * pm.mark // 1  # the largest legal move over one interval
        tick = C.FundingTick(market=BTC_USDT_PERP,
                             index=pm.funding_index + step if max_rate else None)
        tick.seq, tick.ts = seq, ts + 1
        ts += 1
        start, start_cpu = time.perf_counter(), time.thread_time()
        events = eng.apply(tick)
        costs.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.thread_time() - start_cpu) * 1e3)
        liquidated += sum(isinstance(e, E.Liquidated) for e in events)
        settled = [e for e in events if isinstance(e, E.FundingSettled)]
        assert settled and not settled[0].paused, events
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    LiqIndex.crossed_funding = count_hard  # type: ignore[method-assign]
    LiqIndex.drain_funding = count_soft  # type: ignore[method-assign]
    problems = eng.check_invariants()
    assert not problems, problems[:5]
    return {"accounts": accounts, "positions": positions, "ticks": ticks,
            "updates_per_interval": updates,
            "rate": "max" if max_rate else "premium/interest",
            "tick_ms_best": round(min(costs), 4),
            "tick_ms_median": round(statistics.median(costs), 4),
            "tick_ms_max": round(max(costs), 4), "tick_cpu_ms_max": round(max(cpu), 4),
            "tick_ms_each": [round(c, 3) for c in costs],
            "update_ms_median": round(statistics.median(update_costs), 4),
            "update_ms_max": round(max(update_costs), 4),
            "update_cpu_ms_max": round(max(update_cpu), 4),
            "rechecked_in_ticks": len(hard), "rechecked_after_ticks": len(soft),
            "liquidations": liquidated,
            "funding_index": pm.funding_index, "setup_s": round(setup_s, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--accounts", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--ticks", type=int, default=20)
    ap.add_argument("--updates", type=int, default=100,
                    help="index updates between two ticks (one funding interval)")
    ap.add_argument("--json", action="store_true", help="one JSON object per line only")
    args = ap.parse_args()
    for n, max_rate in [(n, m) for n in args.accounts for m in (False, True)]:
        r = probe(n, args.ticks, max_rate, args.updates)
        if not args.json:
            print(f"{r['positions']:>7} positions, {r['rate']:>16} rate: funding tick best "
                  f"{r['tick_ms_best']} ms, median {r['tick_ms_median']} ms, max "
                  f"{r['tick_ms_max']} ms (CPU max {r['tick_cpu_ms_max']} ms) over {r['ticks']} "
                  f"ticks; re-checked in ticks "
                  f"{r['rechecked_in_ticks']}, after ticks {r['rechecked_after_ticks']}; "
                  f"index update median {r['update_ms_median']} ms, max "
                  f"{r['update_ms_max']} ms (CPU max {r['update_cpu_ms_max']} ms); "
                  f"{r['liquidations']} liquidations")
        print(json.dumps(r))


if __name__ == "__main__":
    main()
