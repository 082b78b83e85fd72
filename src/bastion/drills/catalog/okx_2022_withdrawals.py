"""OKX, December 2022: a third-party (custody) outage halts withdrawals for hours.

Fault: the custody service goes down (the simulator's ``down`` mode) while users keep
requesting withdrawals (and bots keep trading). Response: nothing; the pipeline is built for
it. The worker's breaker opens and retries with back-off, the status page marks the asset's
withdrawals degraded by itself ("Withdrawals of ETH are delayed ..."), custody comes back, the
queue drains in order and the status clears by itself. Checks: degraded within 10 s, every
withdrawal confirmed exactly once, custody's ledger shows no double send, the status recovers.
Figures: time to degrade, queue depth at recovery, time from recovery to an empty queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import httpx

from bastion.drills.base import Drill, DrillOptions, Run
from bastion.drills.client import TradingClient
from bastion.drills.deployment import Deployment

USERS = (700, 701, 702, 703)
ADDRESS = "0x" + "0c" * 20
ASSET = "ETH"


class CustodySim:
    """The custody simulator in its own process, owned by the drill."""

    def __init__(self, root: Path) -> None:
        import socket
        import subprocess
        import sys

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        log = open(root / "custody-sim.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from bastion.cli.main import app; app()", "custody-sim",
             "--port", str(self.port), "--data", str(root / "custody"), "--block-ms", "200"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        for _ in range(400):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=0.5).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError("custody simulator did not start")

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as http:
            r = await http.request(method, path, json=body)
            return r.json()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class OkxWithdrawals(Drill):
    name = "okx-2022-withdrawals"
    title = "custody down under withdrawal traffic; status degrades and recovers by itself"
    incident = "OKX Dec 2022 (third-party outage halted withdrawals for ~5 hours)"
    markets = ("BTC-USDT",)
    warmup = (5.0, 2.0)
    cooldown = (3.0, 1.0)
    sims: dict[str, CustodySim] = {}

    def outage_s(self, opts: DrillOptions) -> float:
        return 12.0 if opts.short else 60.0

    def deployment(self, root: Path, opts: DrillOptions) -> Deployment:
        sim = CustodySim(root)
        self.sims[str(root)] = sim
        return Deployment(root, env={"BASTION_CUSTODY_URL": sim.url,
                                     "BASTION_CUSTODY_TIMEOUT": "0.5"})

    def sim(self, run: Run) -> CustodySim:
        return self.sims[str(run.root)]

    async def fault(self, run: Run) -> None:
        users = []
        for account in USERS:
            await run.deployment.operator.new_trader(account, {ASSET: "1000"})
            key = await run.deployment.operator.must(
                "POST", "/admin/keys", {"account": account, "permissions": ["read", "withdraw"]})
            users.append(TradingClient(run.deployment.url, key["key"], key["secret"]))
        run.state["users"] = users
        run.state["requested"] = []
        run.state["stop"] = asyncio.Event()
        run.state["traffic"] = asyncio.create_task(self.withdrawal_traffic(run))
        await asyncio.sleep(1.0)
        await self.sim(run).call("POST", "/faults", {"mode": "down", "asset": ASSET})
        run.faulted(f"custody down for {ASSET} withdrawals")

    async def withdrawal_traffic(self, run: Run) -> None:
        """Each user asks for a withdrawal every ~0.5 s (client ids make retries safe)."""
        n = 0
        while not run.state["stop"].is_set():
            for user in run.state["users"]:
                n += 1
                reply = await user.request("POST", "/v1/withdrawals", {
                    "asset": ASSET, "amount": f"0.{10 + n % 80}", "address": ADDRESS,
                    "client_id": f"drill-{n}"})
                if reply.ok:
                    run.state["requested"].append((user, reply.body["id"]))
            await asyncio.sleep(0.5)

    async def component(self, run: Run) -> dict[str, Any]:
        probe = TradingClient(run.deployment.url, "", "")
        try:
            reply = await probe.public("/api/v2/components.json")
        finally:
            await probe.close()
        return next(c for c in reply.body["components"]
                    if c["name"] == f"{ASSET} deposits & withdrawals")

    async def response(self, run: Run) -> None:
        t0 = time.monotonic()
        degraded = None
        outage = self.outage_s(run.opts)
        while time.monotonic() - t0 < outage:
            comp = await self.component(run)
            if degraded is None and comp["status"] != "operational":
                degraded = time.monotonic() - t0
                run.note(f"status page by itself: {comp['reason']}", "response")
                run.state["reason"] = comp["reason"] or ""
            await asyncio.sleep(0.25)
        run.check("withdrawal status degraded within 10 s, with no operator",
                  degraded is not None and degraded <= 10.0,
                  f"after {degraded:.1f} s" if degraded is not None else "never")
        run.check("the status says why, with queue depth and oldest age",
                  run.state.get("reason", "").startswith(f"Withdrawals of {ASSET} are delayed")
                  and "queued" in run.state.get("reason", ""), run.state.get("reason", ""))
        run.figure("time_to_degraded_s", round(degraded, 2) if degraded is not None else None)
        queue = (await run.deployment.operator.must("GET", "/admin/withdrawals"))["assets"]
        run.figure("queue_depth_at_recovery", queue[ASSET]["depth"])
        await self.sim(run).call("POST", "/faults", {"mode": "ok", "asset": None})
        run.note(f"custody back after {outage:.0f} s", "response")
        t_up = time.monotonic()
        drained = None
        while time.monotonic() - t_up < 120:
            queue = (await run.deployment.operator.must("GET", "/admin/withdrawals"))["assets"]
            if queue[ASSET]["depth"] == 0 and drained is None:
                drained = time.monotonic() - t_up
                run.figure("recovery_to_empty_queue_s", round(drained, 2))
            comp = await self.component(run)
            if drained is not None and comp["status"] == "operational":
                run.figure("recovery_to_operational_s", round(time.monotonic() - t_up, 2))
                break
            await asyncio.sleep(0.25)
        run.check("the queue drained after recovery", drained is not None)
        run.check("the status cleared by itself",
                  (await self.component(run))["status"] == "operational")

    async def verify(self, run: Run) -> None:
        run.state["stop"].set()
        await run.state["traffic"]
        requested = run.state["requested"]
        states: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = {}
            for user in run.state["users"]:
                reply = await user.request("GET", "/v1/withdrawals")
                states.update({w["id"]: w["state"] for w in reply.body})
            if all(states.get(wid) == "confirmed" for _, wid in requested):
                break
            await asyncio.sleep(0.5)
        confirmed = sum(1 for _, wid in requested if states.get(wid) == "confirmed")
        run.figure("withdrawals_requested", len(requested))
        run.check("every withdrawal confirmed (none lost)", confirmed == len(requested),
                  f"{confirmed}/{len(requested)}")
        ledger = await self.sim(run).call("GET", "/v1/ledger")
        mine = [w for w in ledger["withdrawals"] if w["reference"] in states]
        run.check("custody ledger: no double send", ledger["double_sends"] == {}
                  and len(mine) == len({w["reference"] for w in mine}),
                  f"{len(mine)} sends for {len(requested)} withdrawals")
        for user in run.state["users"]:
            await user.close()
        self.sim(run).stop()


DRILL = OkxWithdrawals()
