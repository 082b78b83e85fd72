"""Core throughput: replay a seeded, pre-generated command stream through Engine.apply.

    python bench/core.py --ops 300000 --workload churn [--json] [--baseline FILE]
    python bench/core.py --ops 100000 --workload perp --against churn   # interleaved, ratio
    python bench/core.py --ops 100000 --workload churn --pure-too --cpu-time   # compiled/pure

Workloads: ``deep`` (50% passive limits, 15% crossing, 35% cancels of random earlier orders,
some already filled; the book grows to ~200k orders) and ``churn`` (40% cancels of live
orders; the book stays near 5k orders). Accounts, holds and fees are on.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bastion import corebuild  # noqa: E402
from bastion.core import commands as C  # noqa: E402
from bastion.core.engine import Engine  # noqa: E402
from bastion.demo import BTC_USDT, demo_setup, stamp  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perp_workload import gen_perp, mark_update_cost  # noqa: E402

ACCOUNTS = 100
MID = 5_000_000  # 50,000.00 USDT


def _order(rng: random.Random, account: int, side: str, price: int, qty_lots: int) -> C.PlaceOrder:
    return C.PlaceOrder(account=account, market=BTC_USDT, side=side,  # type: ignore[arg-type]
                        price=price, qty=qty_lots * 1_000)


def gen_deep(n: int, seed: int = 7) -> list[C.Command]:
    """Deep book: most orders rest far from the touch; cancels pick any earlier order id."""
    rng = random.Random(seed)
    cmds: list[C.Command] = []
    placed = 0
    for _ in range(n):
        r = rng.random()
        account = rng.randrange(1, ACCOUNTS + 1)
        if r < 0.50 or placed == 0:
            side = "buy" if rng.random() < 0.5 else "sell"
            off = rng.randrange(1, 2_000)
            price = MID - off if side == "buy" else MID + off
            cmds.append(_order(rng, account, side, price, rng.randrange(1, 50)))
            placed += 1
        elif r < 0.65:
            side = "buy" if rng.random() < 0.5 else "sell"
            price = MID + 40 if side == "buy" else MID - 40
            cmds.append(_order(rng, account, side, price, rng.randrange(1, 20)))
            placed += 1
        else:
            oid = rng.randrange(1, placed + 1)
            cmds.append(C.CancelOrder(account=0, market=BTC_USDT, order_id=oid))
    return cmds


def gen_churn(n: int, seed: int = 11) -> list[C.Command]:
    """Churn: 40% cancels of live orders; new orders rest while the book is under 5k orders and
    cross the spread once it is over, so the book hovers near 5k. A shadow engine tracks which
    orders are really live, so every cancel hits a live order."""
    rng = random.Random(seed)
    shadow = Engine()
    for cmd in stamp(demo_setup(list(range(1, ACCOUNTS + 1)))):
        shadow.apply(cmd)
    cmds: list[C.Command] = []
    live: list[int] = []
    seq, ts = shadow.seq, shadow.ts
    for _ in range(n):
        seq += 1
        ts += 1
        orders = shadow.orders
        cmd: C.Command
        if rng.random() < 0.40 and live:
            while live:
                i = rng.randrange(len(live))
                live[i], live[-1] = live[-1], live[i]
                oid = live.pop()
                if oid in orders:
                    break
            else:
                oid = 0
            if oid:
                cmd = C.CancelOrder(account=orders[oid].account, market=BTC_USDT, order_id=oid)
                cmd.seq, cmd.ts = seq, ts
                shadow.apply(cmd)
                cmds.append(cmd)
                continue
        account = rng.randrange(1, ACCOUNTS + 1)
        side = "buy" if rng.random() < 0.5 else "sell"
        if len(orders) > 5_000:
            price = MID + 5 if side == "buy" else MID - 5
        else:
            off = rng.randrange(6, 400)
            price = MID - off if side == "buy" else MID + off
        cmd = _order(rng, account, side, price, rng.randrange(1, 20))
        cmd.seq, cmd.ts = seq, ts
        oid = shadow.next_order_id
        shadow.apply(cmd)
        if oid in shadow.orders:
            live.append(oid)
        cmds.append(cmd)
    return cmds


WORKLOADS = {"deep": gen_deep, "churn": gen_churn, "perp": gen_perp}


def prepare(workload: str, ops: int) -> tuple[Engine, list[C.Command]]:
    """An engine with demo markets and funded accounts, and the stamped workload stream.

    Cancels in ``deep`` name order ids only; the account is filled in from a dry index so a
    cancel of a filled order is still a realistic UNKNOWN_ORDER."""
    if workload == "perp":  # its own setup: 10k accounts with positions (bench/perp_workload)
        return gen_perp(ops)
    engine = Engine()
    for cmd in stamp(demo_setup(list(range(1, ACCOUNTS + 1)))):
        engine.apply(cmd)
    stream = WORKLOADS[workload](ops)
    owner: dict[int, int] = {}
    next_id = engine.next_order_id
    for cmd in stream:
        if isinstance(cmd, C.PlaceOrder):
            owner[next_id] = cmd.account
            next_id += 1
        elif isinstance(cmd, C.CancelOrder) and cmd.account == 0:
            cmd.account = owner.get(cmd.order_id, 1)
    if workload != "churn":
        stamp(stream, start_seq=engine.seq + 1, start_ts=engine.ts + 1)
    return engine, stream


#: the timer of the timed loop: wall clock, or this process's CPU time (``--cpu-time``: on a
#: loaded machine it leaves out the time other processes had the core)
CLOCK = time.perf_counter


def run(workload: str, ops: int, huge_pages: bool = False) -> dict[str, object]:
    engine, stream = prepare(workload, ops)
    gc.collect()
    collapsed = _collapse() if huge_pages else None
    gc.freeze()
    apply = engine.apply
    t0 = CLOCK()
    for cmd in stream:
        apply(cmd)
    elapsed = CLOCK() - t0
    gc.unfreeze()
    resting = len(engine.orders)
    return {"workload": workload, "ops": ops, "seconds": round(elapsed, 3),
            "ops_per_s": round(ops / elapsed), "resting_orders": resting,
            "trades": engine.next_trade_id - 1,
            **({"huge_pages_mib": collapsed} if collapsed is not None else {})}


def _collapse() -> int:
    """Back the prepared heap (engine and stream) by 2 MiB pages, as the node does before a
    snapshot (``bastion.node.hugepages``): MiB collapsed, 0 where unsupported. Opt-in: the
    default figure is the one on 4 KiB pages."""
    from bastion.node.hugepages import collapse_heap

    result = collapse_heap()
    return result.bytes >> 20 if result.supported else 0


def pure_run(workload: str, ops: int) -> int:
    """One run of ``workload`` on the pure-Python core, in a child process."""
    cpu = ["--cpu-time"] if CLOCK is time.process_time else []
    out = subprocess.run([sys.executable, __file__, "--workload", workload, "--ops", str(ops),
                          "--repeat", "1", "--json", *cpu], capture_output=True, text=True,
                         check=True, env={**os.environ, corebuild.PURE_ENV: "1"})
    return int(json.loads(out.stdout.strip().splitlines()[-1])["ops_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ops", type=int, default=300_000)
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="churn")
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs (the machine is noisy)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    ap.add_argument("--baseline", type=Path, help="JSON from an earlier run to compare against")
    ap.add_argument("--against", choices=sorted(WORKLOADS),
                    help="also run this workload, interleaved run by run, and print the ratio")
    ap.add_argument("--pure-too", action="store_true",
                    help="also time the pure-Python core (BASTION_PURE=1, a child process) "
                         "run by run, and print compiled/pure")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time the loop in process CPU time instead of wall clock")
    ap.add_argument("--huge-pages", action="store_true",
                    help="back each prepared heap by 2 MiB pages before timing (MADV_COLLAPSE, "
                         "as the node does; opt-in, both workloads alike)")
    args = ap.parse_args()
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time
    runs: list[dict[str, object]] = []
    other: list[dict[str, object]] = []
    pure: dict[str, list[int]] = {args.workload: [], **({args.against: []} if args.against else {})}
    for _ in range(args.repeat):
        runs.append(run(args.workload, args.ops, args.huge_pages))
        if args.against:
            other.append(run(args.against, args.ops, args.huge_pages))
        if args.pure_too:
            for workload in pure:
                pure[workload].append(pure_run(workload, args.ops))
    result = max(runs, key=lambda r: int(r["ops_per_s"]))  # type: ignore[call-overload]
    result["runs_ops_per_s"] = [r["ops_per_s"] for r in runs]
    result["build"] = corebuild.describe()
    result["clock"] = "process CPU" if args.cpu_time else "wall"
    if args.huge_pages:
        result["clock"] += f"; heap collapsed to 2 MiB pages ({result.get('huge_pages_mib', 0)} MiB)"
    if args.pure_too:
        result["pure"] = {w: {"ops_per_s": max(v), "runs_ops_per_s": v} for w, v in pure.items()}
    if args.workload == "perp":
        result["mark_update_us"] = {n: mark_update_cost(n)["us_per_mark_update"]
                                    for n in (1_000, 10_000)}
    if args.against:
        best_other = max(int(r["ops_per_s"]) for r in other)  # type: ignore[call-overload]
        result["against"] = {"workload": args.against, "ops_per_s": best_other,
                             "runs_ops_per_s": [r["ops_per_s"] for r in other]}
        result["ratio_to_against"] = round(int(result["ops_per_s"]) / best_other, 3)  # type: ignore[call-overload]
    if args.baseline:
        base = json.loads(args.baseline.read_text().strip().splitlines()[-1])
        result["baseline_ops_per_s"] = base["ops_per_s"]
        result["ratio_to_baseline"] = round(int(result["ops_per_s"]) / base["ops_per_s"], 3)
    if not args.json:
        print(f"{result['build']}; timed by {result['clock']}")
        print(f"{result['workload']}: {result['ops']} ops in {result['seconds']} s = "
              f"{result['ops_per_s']:,} ops/s; resting {result['resting_orders']}, "
              f"trades {result['trades']}; runs {result['runs_ops_per_s']}")
        if args.against:
            print(f"{args.against}: best {result['against']['ops_per_s']:,} ops/s, runs "  # type: ignore[index]
                  f"{result['against']['runs_ops_per_s']}; ratio "  # type: ignore[index]
                  f"{args.workload}/{args.against} = {result['ratio_to_against']}")
        for workload, runs_pure in pure.items() if args.pure_too else ():
            mine = result if workload == args.workload else result["against"]
            print(f"{workload} pure-Python core: best {max(runs_pure):,} ops/s, runs "
                  f"{runs_pure}; {corebuild.KIND}/pure = "
                  f"{int(mine['ops_per_s']) / max(runs_pure):.2f}")  # type: ignore[index]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
