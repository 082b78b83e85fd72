"""Reopen markets in ``recovery`` protection after a restart, failover or rollback.

OKX, Dec 2022: after the outage, the first 20 minutes were a "recovery protection period":
cancels, post-only orders and added margin only, no matching, then back to normal by itself.
The return to ``open`` is part of the journaled mode (``until_ts``), so it replays exactly.
"""

from __future__ import annotations

from typing import Protocol

from bastion.core import commands as C
from bastion.core import events as E
from bastion.core.engine import Engine

#: modes an operator (or a guard) chose on purpose: a restart must not loosen them
KEEP_MODES = frozenset({"halted", "closed", "cancel_only"})


class Submitter(Protocol):
    @property
    def engine(self) -> Engine: ...

    async def submit(self, cmd: C.Command) -> list[E.Event]: ...


def recovery_commands(engine: Engine, now_ms: int, seconds: float, reason: str,
                      markets: list[str] | None = None) -> list[C.Command]:
    """``SetMarketMode(recovery, until)`` for each market that is trading now, or for each
    named market that is not ``closed`` (an operator reopening halted markets names them)."""
    until = now_ms + int(seconds * 1000)
    if markets:
        return [C.SetMarketMode(market=m, mode="recovery", reason=reason, until_ts=until)
                for m in sorted(markets)
                if m in engine.markets and engine.markets[m].mode != "closed"]
    return [C.SetMarketMode(market=m, mode="recovery", reason=reason, until_ts=until)
            for m in sorted(engine.markets) if engine.markets[m].mode not in KEEP_MODES]


async def reopen_in_recovery(node: Submitter, now_ms: int, seconds: float, reason: str,
                             markets: list[str] | None = None) -> list[str]:
    """Journal the recovery period; returns the markets it covers."""
    done: list[str] = []
    for cmd in recovery_commands(node.engine, now_ms, seconds, reason, markets):
        events = await node.submit(cmd)
        if any(isinstance(e, E.ModeChanged) for e in events):
            done.append(cmd.market)  # type: ignore[attr-defined]
    return done
