"""OKX, 15 Aug 2023: a metadata upgrade that passed on drifted demo data refused placing,
amending and cancelling orders for 22.5 minutes.

Fault: an operator prepares a tick change (BTC-USDT 0.01 -> 1.00 USDT) while clients keep
quoting on the old grid. Response: ``migrate dry-run`` against the live data directory (the
node keeps running) refuses it: resting orders sit off the new grid (``refuse-migration``),
and with ``cancel`` instead, most of the clients' usual orders would now be refused. To show
what was avoided, the same change is forced onto a scratch copy of live (a second deployment
on a copy of the data) as a raw ``UpdateMarket``, the OKX way, and clients with cached
metadata are refused there; live is never touched.
"""

from __future__ import annotations

import asyncio
import random
import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

from bastion.core import commands as C
from bastion.drills.base import Drill, Run
from bastion.drills.bots import Bot, Tape
from bastion.drills.deployment import Deployment
from bastion.drills.runner import make_crew
from bastion.ops.migrations.dryrun import dry_run, report_dict
from bastion.ops.migrations.spec import parse_migration

MARKET = "BTC-USDT"
NEW_TICK = 100  # 1.00 USDT at price_decimals 2
SCRATCH_ACCOUNT = 3_000
MIGRATION = f"""format = 1
id = "okx-2023-tick"
description = "Coarsen the {MARKET} tick from 0.01 to 1.00 USDT"
author = "drill"

[[changes]]
kind = "tick"
market = "{MARKET}"
tick_size = {NEW_TICK}
on_conflict = "POLICY"
"""


def _stale(bot: Bot, tick: Decimal) -> None:
    """A client that cached the market's metadata: it keeps quoting on the old tick."""
    fresh = bot.refresh

    async def refresh() -> bool:
        ok = await fresh()
        if bot.view is not None:
            bot.view.tick = tick
        return ok

    bot.refresh = refresh  # type: ignore[method-assign]


class OkxMetadata(Drill):
    name = "okx-2023-metadata"
    title = "a tick change caught by dry-run on live state; forced on a scratch copy it refuses"
    incident = "OKX 15 Aug 2023 (metadata upgrade, 22.5 minutes of refused order entry)"
    markets = (MARKET,)
    warmup = (10.0, 4.0)
    cooldown = (5.0, 2.0)

    async def fault(self, run: Run) -> None:
        for policy in ("refuse-migration", "cancel"):
            path = run.root / f"migration-{policy}.toml"
            path.write_text(MIGRATION.replace("POLICY", policy))
            run.state[policy] = path
        run.faulted(f"operator prepares a {MARKET} tick change to 1.00 USDT; clients keep "
                    "quoting on 0.01")

    async def _dry_run(self, run: Run, policy: str) -> dict[str, Any]:
        mig = parse_migration(Path(run.state[policy]).read_bytes())
        rep = await asyncio.to_thread(dry_run, mig, run.deployment.data, minutes=10)
        return report_dict(rep)

    async def response(self, run: Run) -> None:
        refuse = await self._dry_run(run, "refuse-migration")
        refusal = refuse["refused_now"] or {}
        run.check("dry-run on live state refuses the migration (orders off the new grid)",
                  not refuse["ok"] and refusal.get("code") == "MIGRATION_CONFLICT",
                  refusal.get("message", "")[:160])
        cancel = await self._dry_run(run, "cancel")
        bulk = {b["command"]: b for b in cancel["bulk_refusals"]}
        place = bulk.get("PlaceOrder", {})
        run.check("with on_conflict=cancel the dry-run shows order entry refused in bulk",
                  not cancel["ok"] and bool(place),
                  f"{place.get('refused', 0)} of {place.get('previously_accepted', 0)} recent "
                  f"orders would be refused; {cancel['cancelled_now']['count']} cancelled")
        run.figure("dry_run_orders_cancelled", cancel["cancelled_now"]["count"])
        run.figure("dry_run_orders_refused", place.get("refused", 0))
        run.figure("dry_run_replayed_commands", cancel["window"]["commands"])
        listing = await run.deployment.operator.must("GET", f"/v1/markets/{MARKET}")
        run.check("live metadata untouched", Decimal(listing["tick_size"]) == Decimal("0.01"),
                  f"tick {listing['tick_size']}")
        run.note("dry-run refused the migration; live untouched", "response")
        await self._forced(run)

    async def _forced(self, run: Run) -> None:
        scratch = Deployment(run.root / "scratch")
        await asyncio.to_thread(shutil.copytree, run.deployment.data, scratch.data,
                                ignore=shutil.ignore_patterns("*.lock", "LOCK"))
        tape = Tape()
        crew = None
        try:
            await scratch.start_async()
            await scratch.inject(C.UpdateMarket(market=MARKET, tick_size=NEW_TICK,
                                                reason="forced, no dry-run"))
            run.note("scratch copy of live: tick change forced as a raw UpdateMarket")
            crew = await make_crew(scratch.operator, scratch.url, [MARKET], tape,
                                   random.Random(run.opts.seed), first_account=SCRATCH_ACCOUNT)
            for bot in crew.bots:
                _stale(bot, Decimal("0.01"))
            crew.start()
            await run.sleep(6.0, 3.0)
        finally:
            if crew is not None:
                await crew.close()
            await scratch.close()
        refused = [a for a in tape.attempts if not a.ok and a.code == "TICK_SIZE"]
        run.check("forced on the scratch copy, clients' orders are refused",
                  len(refused) > 0, f"{len(refused)} of {len(tape.attempts)} orders refused "
                                    "TICK_SIZE")
        run.figure("forced_orders_sent", len(tape.attempts))
        run.figure("forced_orders_refused", len(refused))


DRILL = OkxMetadata()
