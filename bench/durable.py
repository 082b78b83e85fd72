"""Durable throughput: the ``churn`` workload through the node (sequencer, group commit with
real fdatasync on the local journal, apply, acknowledge) against the in-memory core
(``Engine.apply`` alone) in the same run.

    python bench/durable.py --ops 300000 [--batch 1000] [--depth 8] [--repeat 3] [--json]

Clients submit ``--batch`` commands per request and keep ``--depth`` requests in flight, the
way a gateway forwards whatever arrived since its last loop tick. Core and node runs alternate
and the best of ``--repeat`` each is compared (the machine is shared and noisy); CPU-time
figures are printed too because they are less sensitive to other processes.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from bastion.demo import demo_setup  # noqa: E402
from bastion.journal.base import Journal  # noqa: E402
from bastion.node import Node, NodeConfig  # noqa: E402
from bastion.node.gcpolicy import apply_gc_policy  # noqa: E402
from bench.core import ACCOUNTS, prepare  # noqa: E402


def core_run(ops: int) -> dict[str, float]:
    engine, stream = prepare("churn", ops)
    gc.collect()
    gc.freeze()
    apply = engine.apply
    c0, t0 = time.process_time(), time.perf_counter()
    for cmd in stream:
        apply(cmd)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    gc.unfreeze()
    return {
        "seconds": wall,
        "cpu": cpu,
        "orders": engine.next_order_id,
        "trades": engine.next_trade_id,
    }


async def node_run(
    ops: int, batch: int, depth: int, directory: Path, delay: float,
    journal: Journal | None = None,
) -> dict[str, float]:
    """``journal``: another backend (bench/replicated.py passes the JetStream one)."""
    _, stream = prepare("churn", ops)
    config = NodeConfig(
        snapshot_every_commands=0, snapshot_every_seconds=0, group_max_delay=delay, progress=False
    )
    apply_gc_policy()  # the same collector policy as the server
    node = Node(directory, config=config, journal=journal)
    await node.start()
    await node.submit_many(demo_setup(list(range(1, ACCOUNTS + 1))))
    latencies: list[float] = []
    gc.collect()
    gc.freeze()
    window: deque[asyncio.Future[object]] = deque()
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(0, ops, batch):
        sent = time.perf_counter()
        future = node.submit_many(stream[i : i + batch])
        future.add_done_callback(lambda _f, s=sent: latencies.append(time.perf_counter() - s))
        window.append(future)  # type: ignore[arg-type]
        if len(window) >= depth:
            await window.popleft()
    while window:
        await window.popleft()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)  # back to CPython's defaults for the core run
    committer = node._committer
    assert committer is not None
    result = {
        "seconds": wall,
        "cpu": cpu,
        "fsyncs": committer.batches,
        "records": committer.records,
        "orders": node.engine.next_order_id,
        "trades": node.engine.next_trade_id,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": sorted(latencies)[int(len(latencies) * 0.99) - 1] * 1000,
    }
    await node.close()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ops", type=int, default=300_000)
    ap.add_argument("--batch", type=int, default=1000, help="commands per client request")
    ap.add_argument("--depth", type=int, default=8, help="requests in flight")
    ap.add_argument("--delay", type=float, default=0.001, help="group commit window (s)")
    ap.add_argument("--repeat", type=int, default=3, help="best of N alternating runs")
    ap.add_argument("--dir", type=Path, default=None, help="where the journal goes (real disk)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = ap.parse_args()

    cores: list[dict[str, float]] = []
    nodes: list[dict[str, float]] = []
    for _ in range(args.repeat):
        cores.append(core_run(args.ops))
        workdir = Path(tempfile.mkdtemp(prefix="bastion-durable-", dir=args.dir))
        try:
            nodes.append(
                asyncio.run(node_run(args.ops, args.batch, args.depth, workdir, args.delay))
            )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    core = min(cores, key=lambda r: r["seconds"])
    node = min(nodes, key=lambda r: r["seconds"])
    if (core["orders"], core["trades"]) != (node["orders"], node["trades"]):
        raise SystemExit("node and core diverged: different orders/trades for the same stream")
    result = {
        "workload": "churn",
        "ops": args.ops,
        "batch": args.batch,
        "depth": args.depth,
        "group_max_delay_s": args.delay,
        "core_ops_per_s": round(args.ops / core["seconds"]),
        "node_ops_per_s": round(args.ops / node["seconds"]),
        "ratio": round(core["seconds"] / node["seconds"], 3),
        "ratio_cpu": round(min(r["cpu"] for r in cores) / min(r["cpu"] for r in nodes), 3),
        "runs_core_ops_per_s": [round(args.ops / r["seconds"]) for r in cores],
        "runs_node_ops_per_s": [round(args.ops / r["seconds"]) for r in nodes],
        "fsyncs": int(node["fsyncs"]),
        "records_per_fsync": round(node["records"] / max(1, node["fsyncs"]), 1),
        "ack_p50_ms": round(node["p50_ms"], 2),
        "ack_p99_ms": round(node["p99_ms"], 2),
    }
    if not args.json:
        print(
            f"churn x{args.ops}: core {result['core_ops_per_s']:,} ops/s, node (durable) "
            f"{result['node_ops_per_s']:,} ops/s, ratio {result['ratio']} "
            f"(cpu-time ratio {result['ratio_cpu']}); {result['fsyncs']} fdatasyncs, "
            f"{result['records_per_fsync']} records each; request ack p50 "
            f"{result['ack_p50_ms']} ms, p99 {result['ack_p99_ms']} ms"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
