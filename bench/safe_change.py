"""Cost of proving a change on live state: migration dry-run and shadow run, against a plain
replay of the same journal measured in the same run (the baseline).

    python bench/safe_change.py [--commands 200000] [--runs 3] [--json]

1. A node journals ``--commands`` of seeded spot churn (a snapshot halfway), stamped 1 ms
   apart so the default 10-minute dry-run window holds all the traffic after the snapshot.
2. Baseline: ``rebuild`` of the whole journal (snapshot + tail replay), best of ``--runs``.
3. ``migrate dry-run`` of a fee holiday: rebuild to the window start, replay the window through
   two copies, apply it to live once more; reported as seconds and as a ratio to the baseline.
4. ``shadow`` of a clean candidate (a copy of this source) over the whole journal: each
   version's apply throughput (commands/s) and the wall time, ratio of the two throughputs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bastion.journal.local import LocalJournal  # noqa: E402
from bastion.node import Node, NodeConfig  # noqa: E402
from bastion.node.recovery import rebuild  # noqa: E402
from bastion.node.workload import SpotWorkload, spot_setup  # noqa: E402
from bastion.ops.migrations.dryrun import dry_run  # noqa: E402
from bastion.ops.migrations.spec import parse_migration  # noqa: E402
from bastion.ops.shadow import current_source, shadow  # noqa: E402
from bastion.snapshots.store import SnapshotStore  # noqa: E402

HOLIDAY = b'''format = 1
id = "bench-holiday"
description = "bench"
author = "bench"

[[changes]]
kind = "fees"
market = "BTC-USDT"
maker_fee_ppm = 0
taker_fee_ppm = 0
'''


def build(data: Path, commands: int) -> None:
    now = [1_795_824_000_000]

    def clock() -> int:
        now[0] += 1
        return now[0]

    async def run() -> None:
        cfg = NodeConfig(snapshot_every_commands=0, snapshot_every_seconds=0, progress=False)
        async with Node(data, config=cfg, clock=clock) as node:
            await node.submit_many(spot_setup(20))
            work = SpotWorkload(5, accounts=20)
            for i in range(0, commands, 5_000):
                await node.submit_many(work.batch(min(5_000, commands - i)))
                if i == commands // 2 // 5_000 * 5_000:
                    await node.snapshot("half")

    asyncio.run(run())


def best(fn, runs: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--commands", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-safe-change-"))
    try:
        data = tmp / "shard"
        t0 = time.perf_counter()
        build(data, args.commands)
        built = time.perf_counter() - t0

        def replay() -> int:
            with LocalJournal(data / "journal", readonly=True) as journal:
                engine, _ = rebuild(journal, SnapshotStore(data / "snapshots"), progress=False)
            return engine.seq

        base_s, last = best(replay, args.runs)
        mig = parse_migration(HOLIDAY)
        dry_s, rep = best(lambda: dry_run(mig, data), args.runs)
        candidate = tmp / "candidate" / "src"
        shutil.copytree(current_source() / "bastion", candidate / "bastion",
                        ignore=shutil.ignore_patterns("__pycache__"))
        shadow_s, sh = best(lambda: shadow(str(candidate.parent), data), 1)
        out = {
            "commands": last, "build_s": round(built, 2),
            "replay_s": round(base_s, 3),
            "dry_run_s": round(dry_s, 3), "dry_run_window_commands": rep.commands,  # type: ignore[attr-defined]
            "dry_run_vs_replay": round(dry_s / base_s, 2),
            "shadow_s": round(shadow_s, 3),
            "shadow_baseline_cmd_s": round(sh.baseline.ops_per_second),  # type: ignore[attr-defined]
            "shadow_candidate_cmd_s": round(sh.candidate.ops_per_second),  # type: ignore[attr-defined]
            "shadow_candidate_vs_baseline": round(sh.candidate.ops_per_second  # type: ignore[attr-defined]
                                                  / sh.baseline.ops_per_second, 3),  # type: ignore[attr-defined]
            "shadow_clean": sh.diff.clean,  # type: ignore[attr-defined]
            "python": sys.version.split()[0],
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(out))
        return
    for k, v in out.items():
        print(f"{k:32} {v}")


if __name__ == "__main__":
    main()
