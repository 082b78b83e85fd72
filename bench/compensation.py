"""Compensation speed: a journaled window replayed twice (as it happened and as corrected)
and diffed per account, against one plain ``Engine.apply`` pass over the same commands in the
same run (the floor: two replays cost at least twice that).

    python bench/compensation.py [--ops 200000] [--repeat 3] [--json]

The window is ``--ops`` commands of the spot workload after a warm-up; the correction drops
every cancel of one account, so the corrected history really differs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bastion.node import Node, NodeConfig  # noqa: E402
from bastion.node.workload import SpotWorkload, spot_setup  # noqa: E402
from bastion.ops.compensation import compensate, fork, window  # noqa: E402
from bastion.ops.correction import Correction, Match  # noqa: E402

QUIET = NodeConfig(snapshot_every_commands=0, snapshot_every_seconds=0, progress=False)


async def journal(data: Path, ops: int) -> tuple[int, int]:
    async with Node(data, config=QUIET) as node:
        await node.submit_many(spot_setup(50))
        work = SpotWorkload(1, accounts=50, tag="b-")
        await asyncio.gather(*[node.submit_many(work.batch(1000)) for _ in range(20)])
        first = node.last_seq + 1
        await asyncio.gather(*[node.submit_many(work.batch(1000)) for _ in range(ops // 1000)])
        return first, node.last_seq


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    fix = Correction(incident="bench", reason="drop one account's cancels",
                     drop=[Match(type="CancelOrder", account=7)]).validate()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        first, last = asyncio.run(journal(data, args.ops))
        n = last - first + 1
        comp, plain = [], []
        for _ in range(args.repeat):
            engine, cmds = window(data, first, last)
            copy = fork(engine)
            t0 = time.perf_counter()
            for cmd in cmds:
                copy.apply(cmd)
            plain.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            report = compensate(data, first, last, fix)
            comp.append(time.perf_counter() - t0)
    best_c, best_p = min(comp), min(plain)
    out = {"commands": n, "compensate_s": [round(x, 3) for x in comp],
           "apply_once_s": [round(x, 3) for x in plain],
           "compensate_commands_per_s": round(n / best_c), "apply_commands_per_s":
           round(n / best_p), "ratio_to_two_applies": round(2 * best_p / best_c, 3),
           "accounts_differing": len(report.accounts), "dropped": report.dropped}
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:28} {v}")


if __name__ == "__main__":
    main()
