"""Withdrawal pipeline figures: withdrawals sent per second through the worker (journal +
custody round trips), against bare custody submits in the same run (the baseline), and the
time from a custody recovery to an empty queue for 1,000 queued withdrawals.

    .venv/bin/python bench/withdrawals.py                 # best of 3, human-readable
    .venv/bin/python bench/withdrawals.py --queued 1000 --repeat 5 --json

Each run uses a fresh node (local journal, fdatasync) and a fresh custody simulator process
with 50 ms blocks; the worker runs in the node's event loop as in `make run`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bastion.core import commands as C
from bastion.custody.client import CustodyClient
from bastion.demo import demo_setup
from bastion.node import Node, NodeConfig
from bastion.withdrawals.nodebook import NodeBook
from bastion.withdrawals.worker import WithdrawalWorker, WorkerConfig

ADDR = "0x" + "42" * 20
BLOCK_MS = 50


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SimProcess:
    def __init__(self, root: Path) -> None:
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bastion.custody.sim", str(self.port), str(root / "sim"),
             str(BLOCK_MS), "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(400):
            try:
                if httpx.get(self.url + "/health", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("simulator did not start")

    def fault(self, mode: str) -> None:
        httpx.post(self.url + "/faults", json={"mode": mode, "asset": None}, timeout=5)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def _node(root: Path, accounts: int) -> Node:
    node = Node(root / "node", config=NodeConfig(snapshot_every_commands=10**9))
    await node.start()
    await node.submit_many(demo_setup(list(range(1, accounts + 1)), eth=10**14))
    await node.submit(C.SetWithdrawalRules(asset="ETH", min_amount=1, fee=10,
                                           confirmations=1))
    return node


async def _queue(node: Node, n: int, accounts: int) -> None:
    cmds: list[C.Command] = [C.RequestWithdrawal(account=1 + i % accounts, asset="ETH",
                                                 amount=1_000 + i, address=ADDR)
                             for i in range(n)]
    for i in range(0, n, 1000):
        await node.submit_many(cmds[i:i + 1000])


async def _until(pred, timeout: float = 300.0) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    while not pred():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("pipeline did not drain")
        await asyncio.sleep(0.002)
    return time.perf_counter() - t0


async def _worker_rate(node: Node, client: CustodyClient, n: int, window: int) -> float:
    """Queue n approved withdrawals, then time the worker until custody has all of them."""
    wallet = node.engine.wallet
    await _queue(node, n, 10)
    worker = WithdrawalWorker(NodeBook(node), client, WorkerConfig(window=window))
    task = asyncio.create_task(worker.run())
    try:
        t = await _until(lambda: worker.lanes.get("ETH") is not None
                         and worker.lanes["ETH"].sent_total >= n)
        await _until(lambda: not wallet.open)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return n / t


async def one_run(n_throughput: int, n_queued: int, window: int) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="bench-wd-"))
    sim = SimProcess(root)
    node = await _node(root, 10)
    client = CustodyClient(sim.url, timeout=5.0)
    try:
        # baseline: bare sequential custody submits, no journal, no worker
        t0 = time.perf_counter()
        for i in range(n_throughput):
            await client.submit(f"raw-{i}", f"raw-{i}", "ETH", ADDR, 1_000)
        raw_rate = n_throughput / (time.perf_counter() - t0)

        wallet = node.engine.wallet
        rate_1 = await _worker_rate(node, client, n_throughput, 1)
        rate_8 = await _worker_rate(node, client, n_throughput, 8)
        worker = WithdrawalWorker(NodeBook(node), client, WorkerConfig(window=window))
        task = asyncio.create_task(worker.run())
        await _queue(node, 1, 1)
        await _until(lambda: not wallet.open)

        # recovery: custody down, n_queued withdrawals pile up, then custody comes back
        sim.fault("down")
        await _queue(node, n_queued, 10)
        await asyncio.sleep(1.5)  # the breaker is open by now
        assert len(wallet.open) == n_queued
        sim.fault("ok")
        base = worker.lanes["ETH"].sent_total
        t_all_sent = await _until(lambda: worker.lanes["ETH"].sent_total - base >= n_queued)
        t_empty = t_all_sent + await _until(lambda: not wallet.open)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert node.engine.check_invariants() == []
        return {"worker_sent_per_s": rate_1, "worker_window8_per_s": rate_8,
                "raw_submits_per_s": raw_rate, "ratio": rate_1 / raw_rate,
                "ratio_window8": rate_8 / raw_rate, "recovery_all_sent_s": t_all_sent,
                "recovery_empty_queue_s": t_empty}
    finally:
        await client.close()
        await node.close()
        sim.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--throughput", type=int, default=1000, help="withdrawals for the rate")
    ap.add_argument("--queued", type=int, default=1000, help="queued during the outage")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--window", type=int, default=1, help="worker window for the recovery")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    logging.getLogger("bastion.withdrawals").setLevel(logging.ERROR)  # the outage is on purpose
    runs = [asyncio.run(one_run(args.throughput, args.queued, args.window)) for _ in range(args.repeat)]
    best = {"worker_sent_per_s": max(r["worker_sent_per_s"] for r in runs),
            "worker_window8_per_s": max(r["worker_window8_per_s"] for r in runs),
            "raw_submits_per_s": max(r["raw_submits_per_s"] for r in runs),
            "recovery_empty_queue_s": min(r["recovery_empty_queue_s"] for r in runs),
            "recovery_all_sent_s": min(r["recovery_all_sent_s"] for r in runs)}
    best["ratio"] = best["worker_sent_per_s"] / best["raw_submits_per_s"]
    best["ratio_window8"] = best["worker_window8_per_s"] / best["raw_submits_per_s"]
    if args.json:
        print(json.dumps({"runs": runs, "best": best, "cpus": os.cpu_count(),
                          "python": sys.version.split()[0], "block_ms": BLOCK_MS}))
        return
    for i, r in enumerate(runs, 1):
        print(f"run {i}: worker {r['worker_sent_per_s']:.0f} withdrawals/s sent in order, "
              f"{r['worker_window8_per_s']:.0f}/s with 8 in flight (bare sequential custody "
              f"submits {r['raw_submits_per_s']:.0f}/s: ratios {r['ratio']:.2f}, "
              f"{r['ratio_window8']:.2f}); "
              f"recovery of {args.queued} queued: all sent {r['recovery_all_sent_s']:.2f} s, "
              f"queue empty {r['recovery_empty_queue_s']:.2f} s")
    print(f"best of {len(runs)}: worker {best['worker_sent_per_s']:.0f}/s in order, "
          f"{best['worker_window8_per_s']:.0f}/s with 8 in flight, vs bare "
          f"{best['raw_submits_per_s']:.0f}/s (ratios {best['ratio']:.2f}, "
          f"{best['ratio_window8']:.2f}); recovery to empty "
          f"queue {best['recovery_empty_queue_s']:.2f} s ({BLOCK_MS} ms blocks, "
          f"{statistics.median([r['recovery_empty_queue_s'] for r in runs]):.2f} s median)")


if __name__ == "__main__":
    main()
