"""Kraken, Jan 2018: an engine replacement planned for 2 hours took more than 48, with no way
back.

Fault: a new engine version must go live under traffic. Response: shadow-run it beside the
current one over the live journal (read-only, the node keeps trading): a candidate with the fee
rounding flipped is caught at its first divergent event; a clean candidate passes. The node is
then switched to the candidate (drain, final snapshot, restart from the same data with the
candidate's source) and switched back the same way; the order-entry pause of each switch is
measured in ms from the bots' side. On one node this is a restart; with the cluster it becomes
``bastion upgrade`` (a standby on the candidate, then a switchover).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

from bastion.drills.base import Drill, Run
from bastion.ops.shadow import current_source, report_dict, shadow

MARKET = "BTC-USDT"
ROUND_DOWN = "        return mul(notional, rate_ppm) // PPM\n"
ROUND_UP = "        return -(mul(-notional, rate_ppm) // PPM)\n"


def candidate_tree(dest: Path, flip_fee_rounding: bool = False) -> Path:
    """A copy of the running source as a candidate version (optionally a faulty one)."""
    shutil.copytree(current_source() / "bastion", dest / "src" / "bastion",
                    ignore=shutil.ignore_patterns("__pycache__"))
    if flip_fee_rounding:
        engine = dest / "src" / "bastion" / "core" / "rules.py"
        text = engine.read_text()
        if ROUND_DOWN not in text:
            raise RuntimeError("fee_amount changed shape; update the drill's faulty candidate")
        engine.write_text(text.replace(ROUND_DOWN, ROUND_UP))
    return dest / "src"


class KrakenEngineSwap(Drill):
    name = "kraken-2018-engine-swap"
    title = "a new engine shadow-run on the live journal, switched to and switched back"
    incident = "Kraken Jan 2018 (engine replacement: 2 hours planned, 48+ taken, no way back)"
    markets = (MARKET,)
    warmup = (10.0, 4.0)
    cooldown = (5.0, 2.0)

    async def fault(self, run: Run) -> None:
        run.state["clean"] = candidate_tree(run.root / "candidate")
        run.state["faulty"] = candidate_tree(run.root / "faulty", flip_fee_rounding=True)
        run.faulted("a new engine version must replace the running one under traffic")

    async def _shadow(self, run: Run, which: str) -> dict[str, object]:
        rep = await asyncio.to_thread(shadow, str(run.state[which].parent),
                                      run.deployment.data)
        return report_dict(rep)

    async def response(self, run: Run) -> None:
        faulty = await self._shadow(run, "faulty")
        first = faulty["first_divergence"]
        run.check("shadow run catches the faulty candidate at its first divergent event",
                  not faulty["ok"] and isinstance(first, dict),
                  f"seq {first['seq']}: {', '.join(first['unexplained'])}"
                  if isinstance(first, dict) else "no divergence found")
        clean = await self._shadow(run, "clean")
        runs = clean["runs"]
        assert isinstance(runs, dict)
        run.check("shadow run passes the clean candidate", bool(clean["ok"]),
                  f"{clean['commands']} commands; candidate "
                  f"{runs['candidate']['ops_per_second']:,} cmd/s, current "
                  f"{runs['baseline']['ops_per_second']:,} cmd/s")
        run.figure("shadow_commands", clean["commands"])
        up = await self._switch(run, run.state["clean"], "candidate")
        run.figure("switch_pause_ms", up)
        await run.sleep(4.0, 2.0)
        back = await self._switch(run, None, "previous version")
        run.figure("switch_back_pause_ms", back)

    async def _switch(self, run: Run, source: Path | None, label: str) -> int:
        """Drain and snapshot, restart on ``source``; the pause is the bots' view: last order
        accepted before, first accepted after."""
        dep = run.deployment
        await asyncio.to_thread(dep.stop)
        down = run.tape.now()
        if source is None:
            for name in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE"):
                dep.env.pop(name, None)
        else:
            # the compiled file the server leaves behind proves it imported this source (the
            # package's __init__: a module the compiled core build never replaces)
            dep.env.update(PYTHONPATH=str(source), PYTHONDONTWRITEBYTECODE="")
        await dep.start_async()
        if source is not None:
            loaded = any((source / "bastion" / "core" / "__pycache__").glob("__init__.*.pyc"))
            run.check(f"the node runs the {label}'s code", loaded, str(source))
        t0 = time.monotonic()
        while time.monotonic() - t0 < 20 and not any(a.ok and a.t > down
                                                     for a in run.tape.attempts):
            await asyncio.sleep(0.02)
        last = max((a.t for a in run.tape.attempts if a.ok and a.t <= down), default=down)
        first = min((a.t for a in run.tape.attempts if a.ok and a.t > down), default=None)
        pause_ms = int(((first or run.tape.now()) - last) * 1000)
        run.check(f"orders accepted again after switching to the {label}", first is not None,
                  f"order-entry pause {pause_ms} ms")
        run.note(f"switched to the {label}: order-entry pause {pause_ms} ms", "response")
        return pause_ms


DRILL = KrakenEngineSwap()
