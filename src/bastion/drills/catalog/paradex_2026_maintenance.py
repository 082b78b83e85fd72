"""Paradex, 19 Jan 2026: during a maintenance, a race writes a funding index reset to zero.

History (seeded): a perpetual whose cumulative funding index is 12% of the price, 30 (12 in
CI) long/short pairs at 8x, the longs holding TP/SL triggers. Live: market makers and takers.

Fault: ``bastion maintenance begin`` (online snapshot), trading continues, then the funding
service delivers ``FundingTick(index=0)``.

Response, as Paradex did it, with the kit: halt every market; cancel every order except TP/SL;
compensate the window (drop the corrupted tick); with the guards on (nothing was liquidated:
the guard halted the market) roll back to the maintenance snapshot and reopen in recovery;
with ``--no-guards`` (the cascade happened) journal the credits that make everyone whole and
reopen in recovery. Then ``maintenance end``.
"""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from bastion.drills import paradex_book as P
from bastion.drills.base import Drill, DrillOptions, Run
from bastion.drills.deployment import Deployment
from bastion.drills.runner import settle_units
from bastion.ops.compensation import compensate
from bastion.ops.correction import Correction, Match
from bastion.ops.report import write_reports

SNAPSHOT = "paradex-maintenance"


def correction() -> Correction:
    return Correction(incident="paradex-2026-01-19",
                      reason="funding index reset to zero by a maintenance race",
                      drop=[Match(type="FundingTick", market=P.MARKET,
                                  where={"index": 0})]).validate()


class ParadexMaintenance(Drill):
    name = "paradex-2026-maintenance"
    title = "funding index reset to zero during maintenance; halt, cancel but TP/SL, " \
            "compensate, roll back, reopen in recovery"
    incident = "Paradex 19 Jan 2026 (funding indices reset, liquidation cascade, rollback, " \
               "$650k refunded)"
    markets = (P.MARKET,)
    warmup = (8.0, 3.0)
    cooldown = (5.0, 2.0)

    def pairs(self, opts: DrillOptions) -> int:
        return 12 if opts.short else 30

    def recovery_s(self, opts: DrillOptions) -> float:
        return 4.0 if opts.short else 20.0

    def deployment(self, root: Path, opts: DrillOptions) -> Deployment:
        return Deployment(root)

    async def prepare(self, deployment: Deployment, opts: DrillOptions) -> None:
        start = int(time.time() * 1000) - 13 * P.HOUR
        steps = P.history(self.pairs(opts), guards=opts.guards, start_ms=start)
        await deployment.seed(steps, start)

    async def kit(self, run: Run, method: str, path: str, body: Any = None) -> Any:
        return await run.deployment.operator.must(method, path, body)

    async def fault(self, run: Run) -> None:
        # an order acknowledged before this moment was journaled before the snapshot: it
        # must survive the rollback; one acknowledged later may be abandoned with the tail
        run.rollback_t = run.tape.now()
        m = await self.kit(run, "POST", "/admin/ops/maintenance", {
            "name": SNAPSHOT, "reason": "database upgrade", "minutes": 30})
        run.note(f"maintenance begins: online snapshot {m['snapshot']} at seq {m['seq']}",
                 "response")
        await run.sleep(2.0, 1.0)
        reply = await run.deployment.inject(P.corruption())
        events: list[dict[str, Any]] = reply["events"]  # type: ignore[assignment]
        run.faulted("funding service writes FundingTick(index=0)", seq=int(str(reply["seq"])))
        kinds = [e["type"] for e in events]
        liquidated = sorted({e["account"] for e in events if e["type"] == "LiquidationStarted"})
        run.state["liquidated"] = liquidated
        if run.opts.guards:
            run.check("the guard halted the market instead of liquidating",
                      "GuardTripped" in kinds and not liquidated,
                      ", ".join(e.get("guard", "") for e in events if e["type"] == "GuardTripped"))
        else:
            run.note(f"no guards: {len(liquidated)} accounts liquidated by the reset", "info")

    async def response(self, run: Run) -> None:
        halted = await self.kit(run, "POST", "/admin/ops/modes", {
            "mode": "halted", "reason": "funding index corrupted"})
        run.note(f"kit: halt all ({', '.join(f'{k}={v}' for k, v in halted['markets'].items())})",
                 "response")
        await self.cancel_all_but_tp_sl(run)
        await self.compensate(run)
        if run.opts.guards:
            await self.rollback(run)
        else:
            until = int((time.time() + self.recovery_s(run.opts)) * 1000)
            await self.kit(run, "POST", "/admin/ops/modes", {
                "mode": "recovery", "until_ms": until, "reason": "reopening after incident"})
            run.note("kit: reopen in recovery", "response")
        await self.kit(run, "DELETE", "/admin/ops/maintenance")
        run.note("maintenance ends", "response")
        await self.wait_open(run)

    async def cancel_all_but_tp_sl(self, run: Run) -> None:
        body = {"except_kinds": ["tp_sl"], "dry_run": True}
        dry = await self.kit(run, "POST", "/admin/ops/cancel", body)
        done = await self.kit(run, "POST", "/admin/ops/cancel", {**body, "dry_run": False})
        after = await self.kit(run, "POST", "/admin/ops/cancel", {"dry_run": True})
        run.note(f"kit: cancel all but TP/SL: dry run {dry['selected']}, cancelled "
                 f"{done['canceled']}", "response")
        tp_sl = 2 * self.pairs(run.opts)
        run.check("only the TP/SL triggers are left",
                  after["selected"] == after["by_kind"]["tp_sl"] == tp_sl,
                  f"{after['by_kind']}")
        run.figure("orders_cancelled_by_kit", done["canceled"])

    async def compensate(self, run: Run) -> None:
        health = await self.kit(run, "GET", "/admin/health")
        report = compensate(run.deployment.data, run.fault_seq, health["seq"], correction())
        files = write_reports(report, run.root / "compensation")
        run.report.files["compensation"] = files["html"]
        owed = {a.account: a.owed.get("USDT", 0) for a in report.owed_accounts}
        liquidated = {a.account for a in report.accounts
                      if a.liquidated and not a.liquidated_if_corrected}
        run.figure("compensation_owed", settle_units(report.totals_owed.get("USDT", 0)) +
                   " USDT")
        run.figure("accounts_owed", len(owed))
        run.figure("liquidations_caused", len(liquidated))
        run.note(f"compensation: {report.commands} commands replayed twice; {len(owed)} "
                 f"accounts owed {settle_units(sum(owed.values()))} USDT", "response")
        if run.opts.guards:
            run.check("compensation owed is 0 (nobody was harmed)", not owed, str(owed))
            return
        run.check("every account liquidated by the corruption is owed",
                  liquidated <= set(owed) and liquidated == set(run.state["liquidated"]),
                  f"{len(liquidated)} liquidated, {len(owed)} owed")
        credits = [{"account": a, "asset": "USDT", "amount": settle_units(v)}
                   for a, v in sorted(owed.items())]
        before = {a: await self.balance(run, a) for a in owed}
        body = {"incident": report.incident, "reason": report.reason, "credits": credits}
        first = await self.kit(run, "POST", "/admin/ops/credits", body)
        again = await self.kit(run, "POST", "/admin/ops/credits", body)
        after = {a: await self.balance(run, a) for a in owed}
        whole = all(after[a] - before[a] == owed[a] for a in owed)
        run.check("credits journaled make each account whole (value as corrected)", whole,
                  f"{first['credited']} credited")
        run.check("applying the same report twice credits once",
                  again["credited"] == 0 and again["already"] == len(credits), str(again))

    async def balance(self, run: Run, account: int) -> int:
        body = await self.kit(run, "GET", f"/admin/accounts/{account}")
        for b in body["balances"]:
            if b["asset"] == "USDT":
                return int(Decimal(b["total"]).scaleb(8))
        return 0

    async def rollback(self, run: Run) -> None:
        t0 = time.monotonic()
        await self.kit(run, "POST", "/admin/ops/rollback", {
            "who": "drill", "why": "funding index corrupted during maintenance",
            "to_snapshot": SNAPSHOT, "recovery_s": self.recovery_s(run.opts)})
        run.note("kit: rollback to the maintenance snapshot requested", "response")
        away = await run.deployment.wait_restart(timeout=60)
        run.figure("order_entry_down_for_rollback_s", round(away, 3))
        health = await self.kit(run, "GET", "/admin/health")
        run.note(f"rolled back and restarted in {time.monotonic() - t0:.2f} s at seq "
                 f"{health['seq']}", "response")
        listing = await self.kit(run, "GET", "/v1/markets")
        mode = {m["market"]: m["mode"] for m in listing}
        run.check("reopened in recovery after the rollback", mode[P.MARKET] == "recovery",
                  mode[P.MARKET])
        left = await self.kit(run, "POST", "/admin/ops/cancel", {"dry_run": True})
        run.check("TP/SL triggers are there after the rollback",
                  left["by_kind"]["tp_sl"] == 2 * self.pairs(run.opts), str(left["by_kind"]))

    async def wait_open(self, run: Run) -> None:
        deadline = time.monotonic() + self.recovery_s(run.opts) + 20
        while time.monotonic() < deadline:
            listing = await run.deployment.operator.call("GET", "/v1/markets")
            if listing.ok and all(m["mode"] == "open" for m in listing.body
                                  if m["market"] in self.markets):
                run.note("market back to open", "response")
                return
            await run.sleep(0.2, 0.2)
        run.check("market returns to open after recovery", False, "timed out")


DRILL = ParadexMaintenance()
