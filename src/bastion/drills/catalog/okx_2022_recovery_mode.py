"""OKX, 18-19 Dec 2022: the node dies; trading resumes in a recovery protection period.

Fault: the node process is SIGKILLed under traffic (no shutdown code runs).
Response: it restarts on the same data and, before serving the first request, reopens every
trading market in ``recovery`` for a set time (20 min at OKX; 20 s here, 4 s in CI): cancels,
post-only orders and added margin are accepted, nothing matches, then the markets return to
``open`` by themselves. Checks: nothing acknowledged lost, each recovery rule as a user sees it,
no trade printed inside the period.
"""

from __future__ import annotations

import time
from pathlib import Path

from bastion.drills.base import Drill, DrillOptions, Run
from bastion.drills.client import TradingClient
from bastion.drills.deployment import Deployment

PROBE_ACCOUNT = 900


class OkxRecoveryMode(Drill):
    name = "okx-2022-recovery-mode"
    title = "node SIGKILLed under traffic; reopens in recovery protection, then open"
    incident = "OKX 18-19 Dec 2022 (zone failure, 20-minute recovery protection period)"
    markets = ("BTC-USDT", "BTC-USDT-PERP")
    warmup = (10.0, 3.0)
    cooldown = (5.0, 2.0)

    def protection_s(self, opts: DrillOptions) -> float:
        return 4.0 if opts.short else 20.0

    def deployment(self, root: Path, opts: DrillOptions) -> Deployment:
        return Deployment(root, reopen_recovery_s=self.protection_s(opts))

    async def fault(self, run: Run) -> None:
        probe = await run.deployment.operator.new_trader(
            PROBE_ACCOUNT, {"USDT": "1000000", "BTC": "10"})
        run.state["probe"] = probe
        seq = (await run.deployment.operator.must("GET", "/admin/health"))["seq"]
        run.deployment.kill()
        run.faulted("node SIGKILLed under traffic", seq=seq + 1)

    async def response(self, run: Run) -> None:
        dep = run.deployment
        secs = await dep.start_async()
        restarted_ms = time.time_ns() // 1_000_000 - int(secs * 1000)
        run.note(f"node restarted on the same data in {secs:.2f} s", "response")
        probe: TradingClient = run.state["probe"]
        await self.probe_rules(run, probe)
        await self.wait_open(run, self.protection_s(run.opts) + 15)
        run.state["window"] = (restarted_ms, run.state.get("until", 0))

    async def probe_rules(self, run: Run, probe: TradingClient) -> None:
        listing = await probe.public("/v1/markets")
        modes = {m["market"]: m for m in listing.body}
        traded = [m for m in self.markets if m in modes]
        run.check("every traded market reopened in recovery",
                  all(modes[m]["mode"] == "recovery" for m in traded),
                  ", ".join(f"{m}={modes[m]['mode']}" for m in traded))
        run.state["until"] = max(modes[m]["mode_until"] for m in traded)
        left = run.state["until"] / 1000 - time.time()
        run.check("recovery period set", 0 < left <= self.protection_s(run.opts) + 1,
                  f"{left:.1f} s left")
        m = "BTC-USDT"
        crossing = await probe.place(market=m, side="buy", price="60000", quantity="0.001",
                                     time_in_force="IOC")
        run.check("a matching order is refused (no matching)",
                  crossing.code == "MARKET_MODE", crossing.code)
        passive = await probe.place(market=m, side="buy", price="30000", quantity="0.001",
                                    post_only=True, client_order_id="probe-passive")
        run.check("a post-only order is accepted", passive.ok, str(passive.status))
        if passive.ok:
            gone = await probe.cancel(passive.body["order_id"])
            run.check("a cancel is accepted", gone.ok, str(gone.status))
        margin = await probe.request("POST", "/v1/margin", {"asset": "USDT", "amount": "100"})
        run.check("adding margin is accepted", margin.ok, str(margin.status))
        run.note("recovery rules probed as a user", "response")

    async def wait_open(self, run: Run, timeout: float) -> None:
        probe = TradingClient(run.deployment.url, "", "")
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < timeout:
                listing = await probe.public("/v1/markets")
                if listing.ok and all(m["mode"] == "open" for m in listing.body
                                      if m["market"] in self.markets):
                    run.note("markets back to open by themselves", "response")
                    run.figure("time_to_open_s", round(run.tape.now() - (run.fault_t or 0), 3))
                    return
                await run.sleep(0.2, 0.2)
        finally:
            await probe.close()
        run.check("markets return to open after the period", False, f"not within {timeout} s")

    async def verify(self, run: Run) -> None:
        start, end = run.state.get("window", (0, 0))
        probe = TradingClient(run.deployment.url, "", "")
        try:
            inside = 0
            for m in self.markets:
                trades = await probe.public(f"/v1/markets/{m}/trades?limit=1000")
                inside += sum(1 for t in trades.body if start <= t["ts"] < end)
        finally:
            await probe.close()
        run.check("no trade printed during the recovery period", inside == 0,
                  f"{inside} trades inside")
        run.figure("recovery_period_s", self.protection_s(run.opts))
        await run.state["probe"].close()


DRILL = OkxRecoveryMode()
