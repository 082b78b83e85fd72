"""Runs one drill end to end and produces its report (the same steps for every drill):

1. deployment in a temp dir (seeded if the drill asks), started;
2. bots: per market a market maker and a taker, each with its own funded account and key;
3. warm-up traffic, the drill's ``fault``, its ``response``, cool-down traffic;
4. checks common to every drill (nothing acknowledged lost, invariants served and replayed,
   the journal verifies) and the drill's own ``verify``;
5. figures, timeline, ``report.json`` and ``drill.png``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from bastion.drills.audit import audit
from bastion.drills.base import Drill, DrillOptions, Run
from bastion.drills.bots import Bot, Crew, MarketMaker, Taker, Tape
from bastion.drills.client import OperatorClient, TradingClient
from bastion.drills.report import Report

#: first account number the bots use (two per market: maker, taker)
BOT_ACCOUNT_BASE = 1_000
BUCKET_S = 0.5


async def make_crew(operator: OperatorClient, base_url: str, markets: list[str], tape: Tape,
                    rng: random.Random, period: float = 0.25,
                    first_account: int = BOT_ACCOUNT_BASE,
                    start_ref: Decimal | None = Decimal(50_000)) -> Crew:
    """A maker and a taker per market, funded through the operator API like any customer."""
    probe = TradingClient(base_url, "", "")
    try:
        listing = await probe.public("/v1/markets")
    finally:
        await probe.close()
    if not listing.ok:
        raise RuntimeError(f"cannot list markets: {listing.body}")
    info = {m["market"]: m for m in listing.body}
    bots: list[Bot] = []
    account = first_account
    for name in markets:
        m = info[name]
        funds = {m["quote"]: "10000000", m["base"]: "1000"}
        for cls in (MarketMaker, Taker):
            client = await operator.new_trader(account, funds)
            if m["kind"] == "perp":
                r = await client.request("POST", "/v1/margin", {"asset": m["quote"],
                                                                "amount": "5000000"})
                if not r.ok:
                    raise RuntimeError(f"margin for bot {account}: {r.body}")
            bots.append(cls(f"{cls.role}-{account}", client, account, name, tape,
                            random.Random(rng.random()), period, start_ref=start_ref))
            account += 1
    return Crew(bots)


async def sample_modes(run: Run, stop: asyncio.Event, period: float = 0.2) -> None:
    """Every market's public mode over time (what users saw), for the plot and the report."""
    modes: dict[str, list[tuple[float, str]]] = {}
    run.report.series["modes"] = modes
    probe = TradingClient(run.deployment.url, "", "")
    try:
        while not stop.is_set():
            reply = await probe.public("/v1/markets")
            if reply.ok:
                t = round(run.tape.now(), 3)
                for m in reply.body:
                    points = modes.setdefault(m["market"], [])
                    if not points or points[-1][1] != m["mode"]:
                        points.append((t, m["mode"]))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), period)
    finally:
        await probe.close()


async def acknowledged_lost(run: Run) -> tuple[int, int]:
    """(lost, abandoned): acknowledged orders the deployment no longer knows; those acknowledged
    after a deliberate rollback point count as abandoned (archived), not lost."""
    assert run.crew is not None
    lost = abandoned = 0
    for bot in run.crew.bots:
        acked = [a for a in run.tape.acknowledged() if a.bot == bot.name]
        if not acked:
            continue
        client = TradingClient(run.deployment.url, bot.client.key, bot.client.secret)
        try:
            reply = await client.request("GET", "/v1/orders",
                                         params={"status": "all", "limit": 10_000})
        finally:
            await client.close()
        if not reply.ok:
            raise RuntimeError(f"cannot list orders of {bot.name}: {reply.body}")
        known = {o["order_id"] for o in reply.body}
        for a in acked:
            if a.order_id not in known:
                if run.rollback_t is not None and a.t >= run.rollback_t:
                    abandoned += 1
                else:
                    lost += 1
    return lost, abandoned


def throughput(run: Run, end: float) -> None:
    n = int(end / BUCKET_S) + 1
    ok = [0.0] * n
    bad = [0.0] * n
    for a in run.tape.attempts:
        i = min(int(a.t / BUCKET_S), n - 1)
        (ok if a.ok else bad)[i] += 1 / BUCKET_S
    run.report.series.update(bucket_s=BUCKET_S, t=[round(i * BUCKET_S, 3) for i in range(n)],
                             accepted_per_s=ok, refused_per_s=bad)


def figures(run: Run, end: float) -> None:
    tape = run.tape
    run.figure("orders_sent", len(tape.attempts))
    run.figure("orders_acknowledged", len(tape.acknowledged()))
    refused = tape.valid_refused()
    run.figure("valid_orders_refused", len(refused))
    if refused:
        codes: dict[str, int] = {}
        for a in refused:
            codes[a.code] = codes.get(a.code, 0) + 1
        run.figure("valid_refused_by_code", codes)
    pause, at = tape.longest_pause(min((a.t for a in tape.attempts), default=0.0), end)
    run.figure("longest_order_entry_pause_s", round(pause, 3))
    run.figure("longest_pause_began_at_s", round(at, 3))
    if run.fault_t is not None and "time_to_recover_s" not in run.report.figures:
        after = [a.t for a in tape.attempts if a.ok and a.t > run.fault_t]
        run.figure("time_to_recover_s", round(min(after) - run.fault_t, 3) if after else None)
    run.report.figures.setdefault("compensation_owed", "0")


async def execute(drill: Drill, opts: DrillOptions) -> Report:
    root = opts.out or Path(tempfile.mkdtemp(prefix=f"bastion-drill-{drill.name}-"))
    root.mkdir(parents=True, exist_ok=True)
    report = Report(drill=drill.name, title=drill.title, incident=drill.incident,
                    seed=opts.seed, short=opts.short, guards=opts.guards)
    dep = drill.deployment(root, opts)
    run = Run(opts, root, dep, report)
    stop = asyncio.Event()
    sampler: asyncio.Task[None] | None = None
    end = 0.0
    try:
        await drill.prepare(dep, opts)
        up = await dep.start_async()
        rng = random.Random(opts.seed)
        run.crew = await make_crew(dep.operator, dep.url, list(drill.markets), run.tape, rng)
        run.tape.t0 = time.monotonic()
        run.note(f"deployment up in {up:.2f} s at {dep.url}", "info")
        sampler = asyncio.create_task(sample_modes(run, stop))
        run.crew.start()
        run.note(f"traffic: {len(run.crew.bots)} bots on {', '.join(drill.markets)}")
        await run.sleep(*drill.warmup)
        await drill.fault(run)
        await drill.response(run)
        await run.sleep(*drill.cooldown)
        end = run.tape.now()
        await run.crew.close()
        run.note("traffic stopped")
        lost, abandoned = await acknowledged_lost(run)
        run.figure("acknowledged_commands_lost", lost)
        if run.rollback_t is not None:
            run.figure("acknowledged_then_rolled_back", abandoned)
        run.check("nothing acknowledged was lost", lost == 0,
                  f"{len(run.tape.acknowledged())} acknowledged orders checked")
        health = await dep.operator.must("GET", "/admin/health")
        run.check("served state passes every invariant", health["invariants_ok"],
                  "; ".join(health.get("problems", [])[:3]))
        await drill.verify(run)
    except Exception as exc:
        report.error = f"{type(exc).__name__}: {exc}"
        run.note(f"drill error: {report.error}", "info")
    finally:
        stop.set()
        if sampler is not None:
            await asyncio.gather(sampler, return_exceptions=True)
        if run.crew is not None:
            await run.crew.close()
        end = end or run.tape.now()
        await dep.close()
    _offline(run)
    figures(run, end)
    throughput(run, end)
    report.files["report"] = str(root / "report.json")
    report.files["plot"] = str(root / "drill.png")
    report.files["server_log"] = str(dep.log_path)
    try:
        from bastion.drills.plot import plot

        plot(report, root / "drill.png")
    except ImportError as exc:
        report.files["plot"] = f"not written: {exc}"
    report.write(root / "report.json")
    return report


def _offline(run: Run) -> None:
    """From the files of the stopped deployment: journal, replay, invariants, liquidations."""
    try:
        result = audit(run.deployment.data, run.fault_seq)
    except Exception as exc:
        run.check("journal verifies and replays", False, f"{type(exc).__name__}: {exc}")
        return
    run.check("journal verifies and replays", True, f"{result.records} records")
    run.check("replay passes every invariant", not result.problems,
              "; ".join(result.problems[:3]))
    if result.snapshot_seq:
        run.check("replay reproduces the node's last snapshot", result.snapshot_matches,
                  f"seq {result.snapshot_seq}")
    if run.fault_seq and "liquidations_caused" not in run.report.figures:
        run.figure("liquidations_caused", len(result.liquidated))


def settle_units(amount: int, decimals: int = 8) -> str:
    """An integer amount of the settle asset as a decimal string."""
    return str(Decimal(amount).scaleb(-decimals).normalize())
