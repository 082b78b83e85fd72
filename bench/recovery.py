"""Recovery and snapshot figures on a big book.

    python bench/recovery.py [--orders 1000000] [--tail 1000000] [--restarts 4] [--json]

1. A node builds a book of ``--orders`` resting orders (journaled like any command).
2. Snapshot pause: the time the node's loop is stopped by ``fork()`` for a snapshot of that book
   (the child encodes, writes and fsyncs on its own); measured ``--snapshots`` times.
3. Throughput with a snapshot child writing vs without (half of a churn probe each), then a
   final snapshot and a ``--tail`` of churn commands journaled after it.
4. The node is stopped and started again: time to load and verify the snapshot, replay the
   tail and be ready, and the state hash is checked against the one before the restart.
5. Through the gateway (a ``Gateway`` follows the node from the start, so each snapshot child
   also writes the read model's checkpoint, and a child of its own writes one every
   ``--checkpoint-every`` commands in between, as the server does by default): the node
   restarted with the gateway's read model restored from its newest checkpoint plus the
   commands after it that the node replays, against the node alone (target: within 10%), and
   the previous way (read model replayed from seq 1) for comparison.

Restarts run in pairs (node alone, then through the gateway; the next pair the other way
round), each from a collected heap with nothing of the previous restart alive and the server's
collector policy, so both kinds see the same machine. Every run is printed, with best vs best,
the median of the pairs' ratios and the process CPU time (less disturbed by other load).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from bastion.api.read.checkpoint import Checkpoints, Restorer  # noqa: E402
from bastion.api.service.gateway import Gateway  # noqa: E402
from bastion.core import commands as C  # noqa: E402
from bastion.demo import BTC_USDT, demo_setup  # noqa: E402
from bastion.node import Node, NodeConfig  # noqa: E402
from bastion.node.gcpolicy import apply_gc_policy  # noqa: E402
from bastion.node.recovery import RecoveryReport  # noqa: E402
from bench.core import ACCOUNTS, MID, gen_churn  # noqa: E402


def resting_orders(n: int) -> list[C.Command]:
    """Orders that never cross and sit outside the churn workload's price range."""
    cmds: list[C.Command] = []
    for k in range(n):
        side = "buy" if k % 2 == 0 else "sell"
        off = 500 + (k // 2) % 20_000
        cmds.append(
            C.PlaceOrder(
                account=1 + k % ACCOUNTS,
                market=BTC_USDT,
                side=side,
                price=MID - off if side == "buy" else MID + off,
                qty=1_000,
            )
        )
    return cmds


async def pump(node: Node, cmds: Sequence[C.Command], batch: int = 2000, depth: int = 8) -> float:
    t0 = time.perf_counter()
    window: deque[asyncio.Future[object]] = deque()
    for i in range(0, len(cmds), batch):
        window.append(node.submit_many(cmds[i : i + batch]))  # type: ignore[arg-type]
        if len(window) >= depth:
            await window.popleft()
    while window:
        await window.popleft()
    return time.perf_counter() - t0


async def build(
    directory: Path, orders: int, tail: int, snapshots: int, collapse: bool, every: int
) -> dict[str, float]:
    config = NodeConfig(
        snapshot_every_commands=0,
        snapshot_every_seconds=0,
        progress=False,
        hugepage_collapse_min_rss_mb=NodeConfig().hugepage_collapse_min_rss_mb if collapse else 0,
    )
    node = Node(directory, config=config)
    await node.start()
    gateway = Gateway(node)
    gateway.attach(None, Checkpoints(directory / "api" / "readmodel"), every)
    await node.submit_many(demo_setup(list(range(1, ACCOUNTS + 1))))
    build_s = await pump(node, resting_orders(orders))
    book = len(node.engine.orders)
    pauses: list[float] = []
    writes: list[float] = []
    size = 0
    for _ in range(snapshots):
        t0 = time.perf_counter()
        info = await node.snapshot()
        writes.append(time.perf_counter() - t0)
        pauses.append(node.snapshot_pauses[-1])
        size = info.path.stat().st_size
    probe = min(200_000, max(tail, 2))
    stream = gen_churn(probe + tail)
    offset = node.engine.next_order_id - 1
    for cmd in stream:
        if isinstance(cmd, C.CancelOrder):
            cmd.order_id += offset
    half = probe // 2
    pending = asyncio.ensure_future(node.snapshot())
    during_s = await pump(node, stream[:half], batch=1000)
    still_writing = not pending.done()
    await pending
    after_s = await pump(node, stream[half:probe], batch=1000)
    await node.snapshot()
    tail_s = await pump(node, stream[probe:], batch=1000)
    expected = node.engine.state_hash()
    await node.close()
    gateway.detach()
    checkpointer = gateway.checkpointer
    return {
        "checkpoint_pauses": list(checkpointer.pauses) if checkpointer else [],  # type: ignore[dict-item]
        "checkpoints_written": checkpointer.written if checkpointer else 0,
        "book": book,
        "build_s": build_s,
        "pauses": pauses,  # type: ignore[dict-item]
        "writes": writes,  # type: ignore[dict-item]
        "snapshot_bytes": size,
        "tail_s": tail_s,
        "during_ops_per_s": half / during_s,
        "after_ops_per_s": (probe - half) / after_s,
        "overlap": still_writing,  # type: ignore[dict-item]
        "collapse_s": [c.seconds for c in node.collapses],  # type: ignore[dict-item]
        "expected": expected,  # type: ignore[dict-item]
    }


class Restart:
    """One timed restart: wall and process CPU seconds until ready (CPU of every thread: the
    checkpoint is read in one)."""

    def __init__(self, wall: float, cpu: float) -> None:
        self.wall = wall
        self.cpu = cpu
        self.how = ""
        self.followed = 0
        self.load_s = 0.0
        #: the read model's own work: checkpoint read + checked + decoded (thread CPU),
        #: following the tail, and the gateway's attach after the node is up
        self.read_s = 0.0
        self.follow_s = 0.0
        self.attach_s = 0.0

    @property
    def own_s(self) -> float:
        return self.read_s + self.follow_s + self.attach_s


def restart_with_gateway(directory: Path, restore: bool) -> Restart:
    """Node and gateway ready, with the read model restored from its checkpoint plus the
    node's own tail replay, or (``restore=False``) rebuilt from seq 1."""
    gc.collect()
    c0 = time.process_time()
    t0 = time.perf_counter()
    restorer = Restorer(Checkpoints(directory / "api" / "readmodel")) if restore else None
    node = Node(directory, config=NodeConfig(progress=None),
                recovery_sink=restorer.sink if restorer is not None else None)
    t1 = time.perf_counter()
    gateway = Gateway(node)
    gateway.attach(restorer)
    run = Restart(time.perf_counter() - t0, time.process_time() - c0)
    run.attach_s = time.perf_counter() - t1
    used = restorer is not None and restorer.checkpoint is not None and gateway.readmodel is \
        restorer.restored
    run.how = "checkpoint" if used else "replay"
    if restorer is not None and used:
        run.followed, run.load_s = restorer.tail, restorer.seconds
        run.read_s, run.follow_s = restorer.read_seconds, restorer.follow_seconds
    node.close_offline()
    return run


def restart_node(directory: Path, expected: str) -> tuple[Restart, RecoveryReport]:
    """The node alone ready, and its recovery report (its state hash checked)."""
    gc.collect()
    c0 = time.process_time()
    t0 = time.perf_counter()
    node = Node(directory, config=NodeConfig(progress=None))
    run = Restart(time.perf_counter() - t0, time.process_time() - c0)
    node.close_offline()
    if node.engine.state_hash() != expected:
        raise SystemExit("recovered state hash differs from the state before the restart")
    return run, node.recovery


def _pairs(node_runs: list[Restart], gateway_runs: list[Restart]) -> list[str]:
    out = []
    for k, (n, g) in enumerate(zip(node_runs, gateway_runs, strict=True)):
        first = "node first" if k % 2 == 0 else "gateway first"
        out.append(f"  pair {k + 1} ({first}): node alone {n.wall:.2f} s (CPU {n.cpu:.2f}), "
                   f"gateway {g.wall:.2f} s (CPU {g.cpu:.2f}) -> {g.wall / n.wall:.3f}x (CPU "
                   f"{g.cpu / n.cpu:.3f}x); the read model's own work {g.own_s:.3f} s = "
                   f"{g.own_s / n.wall:.1%} of the node alone: checkpoint read {g.read_s:.3f} s "
                   f"(thread CPU; waited for {g.load_s:.3f} s), {g.followed:,} commands followed "
                   f"in {g.follow_s:.3f} s, attach {g.attach_s:.3f} s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--orders", type=int, default=1_000_000, help="resting orders in the book")
    ap.add_argument("--tail", type=int, default=1_000_000, help="commands after the snapshot")
    ap.add_argument("--snapshots", type=int, default=3, help="snapshot pauses to measure")
    ap.add_argument("--checkpoint-every", type=int, default=100_000,
                    help="the gateway's own read-model checkpoints (commands; 0: off)")
    ap.add_argument("--restarts", type=int, default=4,
                    help="pairs of restarts (node alone, through the gateway), alternating "
                         "which goes first")
    ap.add_argument("--dir", type=Path, default=None, help="where the data goes (real disk)")
    ap.add_argument("--no-collapse", action="store_true", help="plain fork, no huge pages")
    ap.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    args = ap.parse_args()
    if args.restarts < 1:
        ap.error("--restarts must be at least 1")
    workdir = Path(tempfile.mkdtemp(prefix="bastion-recovery-", dir=args.dir))
    try:
        built = asyncio.run(
            build(workdir, args.orders, args.tail, args.snapshots, not args.no_collapse,
                  args.checkpoint_every)
        )
        apply_gc_policy()  # as the server runs: no full collection on its own
        node_runs: list[Restart] = []
        gateway_runs: list[Restart] = []
        load_avg = [round(os.getloadavg()[0], 1)]
        for k in range(args.restarts):  # in pairs, alternating which goes first
            for kind in ("node", "gateway") if k % 2 == 0 else ("gateway", "node"):
                if kind == "gateway":
                    gateway_runs.append(restart_with_gateway(workdir, restore=True))
                    continue
                run, recovered = restart_node(workdir, built["expected"])  # type: ignore[arg-type]
                node_runs.append(run)
            load_avg.append(round(os.getloadavg()[0], 1))
        replay_from_1 = restart_with_gateway(workdir, restore=False)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ok = True  # else restart_node stopped the run
    ready = min(r.wall for r in node_runs)
    gateway_ready = min(r.wall for r in gateway_runs)
    last = gateway_runs[-1]
    how, followed = last.how, last.followed
    wall_ratios = [g.wall / n.wall for n, g in zip(node_runs, gateway_runs, strict=True)]
    cpu_ratios = [g.cpu / n.cpu for n, g in zip(node_runs, gateway_runs, strict=True)]
    rm_pauses = [p * 1000 for p in built["checkpoint_pauses"]]  # type: ignore[attr-defined]
    pauses = [p * 1000 for p in built["pauses"]]  # type: ignore[attr-defined]
    result = {
        "orders": args.orders,
        "book_orders": built["book"],
        "tail": args.tail,
        "snapshot_pause_ms_max": round(max(pauses), 2),
        "snapshot_pause_ms_median": round(statistics.median(pauses), 2),
        "snapshot_write_s": round(statistics.median(built["writes"]), 3),  # type: ignore[arg-type]
        "snapshot_mb": round(built["snapshot_bytes"] / 1e6, 1),
        "startup_s": round(ready, 3),
        "gateway_startup_s": round(gateway_ready, 3),
        "gateway_read_model": how,
        "checkpoint_every": args.checkpoint_every,
        "gateway_followed": followed,
        "gateway_followed_per_restart": [r.followed for r in gateway_runs],
        "gateway_over_node": round(gateway_ready / ready, 3),
        "gateway_over_node_median_of_pairs": round(statistics.median(wall_ratios), 3),
        "gateway_over_node_cpu": round(min(r.cpu for r in gateway_runs)
                                       / min(r.cpu for r in node_runs), 3),
        "gateway_over_node_cpu_median_of_pairs": round(statistics.median(cpu_ratios), 3),
        "node_restarts_cpu_s": [round(r.cpu, 3) for r in node_runs],
        "gateway_restarts_cpu_s": [round(r.cpu, 3) for r in gateway_runs],
        "load_average_1m": load_avg,
        "node_restarts_s": [round(r.wall, 3) for r in node_runs],
        "gateway_restarts_s": [round(r.wall, 3) for r in gateway_runs],
        "checkpoint_load_s": [round(r.load_s, 3) for r in gateway_runs],
        "readmodel_own_s": [round(r.own_s, 3) for r in gateway_runs],
        "readmodel_own_over_node_median": round(statistics.median(
            g.own_s / n.wall for n, g in zip(node_runs, gateway_runs, strict=True)), 4),
        "checkpoint_read_cpu_s": [round(r.read_s, 3) for r in gateway_runs],
        "follow_s": [round(r.follow_s, 3) for r in gateway_runs],
        "attach_s": [round(r.attach_s, 3) for r in gateway_runs],
        "readmodel_checkpoints_written": built["checkpoints_written"],
        "readmodel_checkpoint_pause_ms_max": round(max(rm_pauses, default=0.0), 2),
        "readmodel_checkpoint_pause_ms_median": round(statistics.median(rm_pauses or [0.0]), 2),
        "gateway_startup_replay_from_1_s": round(replay_from_1.wall, 3),
        "startup_snapshot_s": round(recovered.snapshot_seconds, 3),
        "startup_replay_s": round(recovered.replay_seconds, 3),
        "replayed": recovered.replayed,
        "replay_ops_per_s": round(recovered.replayed / max(recovered.replay_seconds, 1e-9)),
        "build_book_s": round(built["build_s"], 3),
        "tail_ops_per_s": round(args.tail / built["tail_s"]),
        "tail_ops_per_s_while_snapshot_child_writes": round(built["during_ops_per_s"]),
        "tail_ops_per_s_after": round(built["after_ops_per_s"]),
        "child_outlived_first_half": built["overlap"],
        "hugepage_collapse_s": [round(c, 2) for c in built["collapse_s"]],  # type: ignore[attr-defined]
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "state_hash_ok": ok,
    }
    if not args.json:
        print("\n".join(_pairs(node_runs, gateway_runs)))
        print(
            f"book {result['book_orders']:,} orders: fork-snapshot pause max "
            f"{result['snapshot_pause_ms_max']} ms (median {result['snapshot_pause_ms_median']} "
            f"ms), child writes {result['snapshot_mb']} MB in {result['snapshot_write_s']} s; "
            f"read-model checkpoints: {result['readmodel_checkpoints_written']} written by the "
            f"gateway's child, fork pause max {result['readmodel_checkpoint_pause_ms_max']} ms "
            f"(median {result['readmodel_checkpoint_pause_ms_median']} ms)\n"
            f"{args.restarts} restart pairs: through the gateway over the node alone "
            f"{result['gateway_over_node']}x best vs best, {result['gateway_over_node_median_of_pairs']}x "
            f"median of pairs (target <= 1.10); process CPU {result['gateway_over_node_cpu']}x "
            f"best vs best, {result['gateway_over_node_cpu_median_of_pairs']}x median of pairs; "
            f"the read model's own work (measured directly) "
            f"{result['readmodel_own_over_node_median']:.1%} of the node alone, median; "
            f"load average {result['load_average_1m']}\n"
            f"restart: snapshot + {result['replayed']:,}-command tail ready in "
            f"{result['startup_s']} s, best (snapshot load+verify {result['startup_snapshot_s']} s, "
            f"replay {result['startup_replay_s']} s = {result['replay_ops_per_s']:,} ops/s); "
            f"state hash matches: {ok}\n"
            f"through the gateway: ready in {result['gateway_startup_s']} s, best, with the read "
            f"model from its {how} + {followed:,} commands followed; "
            f"{result['gateway_startup_replay_from_1_s']} s replaying it from seq 1\n"
            f"tail throughput while a snapshot child writes "
            f"{result['tail_ops_per_s_while_snapshot_child_writes']:,} ops/s, after "
            f"{result['tail_ops_per_s_after']:,} ops/s; huge-page collapse before forks "
            f"{result['hugepage_collapse_s']} s (worker thread)"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
