"""The withdrawal pipeline beside a leader node: the custody connector, the withdrawal worker
and the deposit watcher as tasks of the node's event loop, plus (in the embedded default) the
custody simulator as a child process.

Placement: exactly one worker per venue, beside the node that writes the journal. In the
embedded default that is this process. In a cluster it is the leading engine node
(``bastion.cluster.member`` starts it when it leads, stops it when it steps down, and fences
every custody call on its lease); a gateway (``node.runs_withdrawal_worker`` is False) runs a
custody *client* only, for deposit addresses and the queue view, and never a simulator.

Environment: ``BASTION_CUSTODY_URL`` (a real custody service; unset: start the simulator),
``BASTION_CUSTODY_PORT`` (simulator port, 0 = any free one), ``BASTION_CUSTODY_BLOCK_MS``
(simulated block time), ``BASTION_WITHDRAWALS=0`` (no pipeline at all).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.core import commands as C
from bastion.custody.client import CustodyClient, CustodyUnavailable
from bastion.custody.sim import CRASH_EXIT, die_with_parent
from bastion.withdrawals.deposits import DepositWatcher
from bastion.withdrawals.nodebook import NodeBook
from bastion.withdrawals.worker import WithdrawalWorker, WorkerConfig

log = logging.getLogger("bastion.withdrawals")

#: demo rules per asset (8 decimals): minimum, fee, manual review above, confirmations
DEMO_RULES = {
    "BTC": dict(min_amount=10_000, fee=5_000, manual_above=10 * 10**8, confirmations=2),
    "ETH": dict(min_amount=100_000, fee=50_000, manual_above=100 * 10**8, confirmations=3),
    "USDT": dict(min_amount=10 * 10**8, fee=10**8, manual_above=100_000 * 10**8,
                 confirmations=3),
}


@dataclass
class PipelineConfig:
    enabled: bool = True
    custody_url: str | None = None
    sim_port: int = 0
    block_ms: int = 1000
    timeout: float = 2.0
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    #: how often the queue's health goes to the status page, and when it counts as delayed
    status_interval: float = 1.0
    unreachable_after_s: float = 2.0
    stuck_after_ms: int = 60_000

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> PipelineConfig:
        e = dict(os.environ if env is None else env)
        c = cls()
        c.enabled = e.get("BASTION_WITHDRAWALS", "1") not in ("0", "false", "no", "off")
        c.custody_url = e.get("BASTION_CUSTODY_URL") or None
        c.sim_port = int(e.get("BASTION_CUSTODY_PORT", "0"))
        c.block_ms = int(e.get("BASTION_CUSTODY_BLOCK_MS", str(c.block_ms)))
        c.timeout = float(e.get("BASTION_CUSTODY_TIMEOUT", str(c.timeout)))
        c.worker.outage_pause_s = float(e.get("BASTION_OUTAGE_PAUSE_S",
                                              str(c.worker.outage_pause_s)))
        return c


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_simulator(data_dir: Path, port: int, block_ms: int) -> tuple[subprocess.Popen[bytes],
                                                                       str]:
    """The embedded default's custody: the simulator (what ``bastion custody-sim`` runs) as a
    child that dies with us; the pipeline itself restarts it after a simulated crash, so no
    separate supervisor process is needed."""
    port = port or _free_port()
    sim_dir = data_dir / "custody-sim"
    sim_dir.mkdir(parents=True, exist_ok=True)
    logf = open(sim_dir / "sim.log", "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion.custody.sim", str(port), str(sim_dir), str(block_ms),
         "127.0.0.1"], stdout=logf, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    logf.close()
    return proc, f"http://127.0.0.1:{port}"


#: ``guard()`` returns why this process may no longer act for the venue, or None
Guard = Callable[[], BaseException | None]


class FencedCustodyClient(CustodyClient):
    """A custody connection that asks ``guard`` before every call: a leader that lost its
    lease (frozen past it, or deposed) sends nothing more to custody, even in the moments
    before it notices and stops its worker. Refused calls count as custody unavailable, so
    the worker keeps the outcome open and the next leader reconciles it."""

    def __init__(self, base_url: str, guard: Guard, timeout: float = 2.0,
                 name: str = "custody") -> None:
        super().__init__(base_url, timeout=timeout, name=name)
        self.guard = guard
        self.refused = 0

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        problem = self.guard()
        if problem is not None:
            self.refused += 1
            log.warning("custody call %s %s not sent: this node no longer leads (%s)",
                        method, path, problem)
            raise CustodyUnavailable(f"not sent: this node no longer leads ({problem})")
        return await super()._call(method, path, **kw)


class Pipeline:
    """Start with ``await pipeline.start()`` after the node recovered; ``await stop()``.

    ``worker=None`` follows the node: a gateway's node (``runs_withdrawal_worker = False``)
    gets the custody client only. ``guard``: see ``FencedCustodyClient``."""

    def __init__(self, node: Any, data_dir: Path, config: PipelineConfig | None = None,
                 demo: bool = False, worker: bool | None = None,
                 guard: Guard | None = None) -> None:
        self.node = node
        self.data_dir = data_dir
        self.config = config or PipelineConfig.from_env()
        self.demo = demo
        self.runs_worker = (bool(getattr(node, "runs_withdrawal_worker", True))
                            if worker is None else worker)
        self.guard = guard
        self.book = NodeBook(node)
        self.sim: subprocess.Popen[bytes] | None = None
        self.client: CustodyClient | None = None
        self.worker: WithdrawalWorker | None = None
        self.watcher: DepositWatcher | None = None
        self.tasks: list[asyncio.Task[None]] = []

    @property
    def custody_url(self) -> str:
        return self.client.base_url if self.client else ""

    async def start(self) -> None:
        c = self.config
        if not c.enabled:
            return
        if not self.runs_worker:
            if c.custody_url is not None:
                self.client = await asyncio.to_thread(self._connect, c.custody_url)
            return
        if self.demo:
            await self._demo_rules()
        url = c.custody_url
        if url is None:
            self.sim, url = start_simulator(self.data_dir, c.sim_port, c.block_ms)
            print(f"custody simulator (bastion custody-sim): {url}  ledger "
                  f"{self.data_dir / 'custody-sim'}", flush=True)
        self.client = await asyncio.to_thread(self._connect, url)
        self.worker = WithdrawalWorker(self.book, self.client, c.worker)
        self.watcher = DepositWatcher(self.book, self.client)
        self.tasks = [asyncio.create_task(self._run(self.worker.run()), name="withdrawal-worker"),
                      asyncio.create_task(self._run(self.watcher.run()), name="deposit-watcher")]
        if self.sim is not None:
            port = int(url.rsplit(":", 1)[1])
            self.tasks.append(asyncio.create_task(self._supervise_sim(port), name="custody-sim"))

    def _connect(self, url: str) -> CustodyClient:
        """Built off the event loop (an HTTP client loads its TLS trust store): a node that
        just took over keeps serving orders meanwhile."""
        timeout = self.config.timeout
        if self.guard is None:
            return CustodyClient(url, timeout=timeout)
        return FencedCustodyClient(url, self.guard, timeout=timeout)

    async def _supervise_sim(self, port: int) -> None:
        """Restart the embedded simulator after a simulated crash (``crash_after_accept``)."""
        while True:
            await asyncio.sleep(0.2)
            if self.sim is not None and self.sim.poll() == CRASH_EXIT:
                self.sim, _ = start_simulator(self.data_dir, port, self.config.block_ms)

    async def _run(self, job: Any) -> None:
        """A freshly started simulator needs a moment: wait for it quietly, then work."""
        if self.sim is not None and self.client is not None:
            for _ in range(150):
                try:
                    await self.client.health()
                    break
                except Exception:
                    await asyncio.sleep(0.1)
        await job

    def watch_status(self, status: Any) -> None:
        """Report each asset's queue health to the status service every ``status_interval``
        (a gateway reports what its replica shows: depth, age, pauses)."""
        if self.config.enabled and status is not None:
            self.tasks.append(asyncio.create_task(self._feed_status(status),
                                                  name="withdrawal-status"))

    async def _feed_status(self, status: Any) -> None:
        while True:
            now_ms = time.time_ns() // 1_000_000
            for asset in self.book.assets():
                depth, oldest_ms, reason = self.queue_health(asset, now_ms)
                try:
                    status.tracker.observe_withdrawal_queue(asset, depth, oldest_ms, reason)
                except Exception:
                    log.exception("withdrawal status report failed")
            await asyncio.sleep(self.config.status_interval)

    def queue_health(self, asset: str, now_ms: int) -> tuple[int, int, str]:
        """(depth, age of the oldest queued withdrawal in ms, why it is delayed or "").

        Delayed means: the asset is paused, custody has been unreachable for
        ``unreachable_after_s``, or the oldest approved withdrawal has waited
        ``stuck_after_ms`` without going out. Withdrawals waiting for an operator's review or
        a new address's delay are intentional waits and do not count."""
        wallet = self.node.engine.wallet
        paused = wallet.paused_reason(asset)
        queued = [w for w in wallet.open.values()
                  if w.asset == asset and w.state in ("approved", "submitted")]
        depth = len(queued)
        oldest = now_ms - min(w.created_ts for w in queued) if queued else 0
        if paused:
            return depth, oldest, f"paused: {paused}"
        if not queued:
            return depth, oldest, ""
        lane = self.worker.lanes.get(asset) if self.worker is not None else None
        down = lane.breaker.down_since if lane is not None else None
        if down is not None:
            for_s = time.monotonic() - down
            if for_s >= self.config.unreachable_after_s:
                return depth, oldest, f"custody unreachable for {int(for_s)} s"
        unsent = [w for w in queued if w.state == "approved"]
        if unsent and now_ms - unsent[0].created_ts > self.config.stuck_after_ms:
            return depth, oldest, "the queue is not moving"
        return depth, oldest, ""

    async def _demo_rules(self) -> None:
        wallet = self.node.engine.wallet
        cmds: list[C.Command] = [
            C.SetWithdrawalRules(asset=asset, reason="demo", **rules)
            for asset, rules in DEMO_RULES.items()
            if asset in self.node.engine.assets and asset not in wallet.rules]
        if cmds:
            await self.node.submit_many(cmds)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks = []
        if self.client is not None:
            await self.client.close()
        if self.sim is not None and self.sim.poll() is None:
            self.sim.terminate()
            try:
                self.sim.wait(5)
            except subprocess.TimeoutExpired:
                self.sim.kill()
