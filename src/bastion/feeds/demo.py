"""A demo oracle for the embedded default: index updates and funding ticks for perpetuals.

Real venues take the index from several external exchanges; the embedded demo has none, so it
derives three "sources" from the spot book of the same base (mid price, or a random walk when
the book is empty) with small independent noise. It only submits commands through the node,
like any feeder would, so the core stays deterministic on replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from bastion.core import commands as C
from bastion.core.engine import Engine

log = logging.getLogger("bastion.feeds")

Submit = Callable[[C.Command], "asyncio.Future[object] | object"]


def spot_anchor(engine: Engine, perp_market: str, fallback: int) -> int:
    """Mid of the spot market ``BASE-QUOTE`` for ``BASE-QUOTE-PERP``, else its last price."""
    spot = perp_market.removesuffix("-PERP")
    book = engine.books.get(spot)
    mkt = engine.markets.get(spot)
    if book is None or mkt is None:
        return fallback
    bid, ask = book.bids.best(), book.asks.best()
    if bid is not None and ask is not None:
        return (bid + ask) // 2
    return mkt.last_price or fallback


class DemoFeeder:
    """Every ``period_s``: one ``UpdateIndex`` per perpetual; at each funding boundary: a
    ``FundingTick``. Prices are in the perp market's price units (same decimals as its spot)."""

    def __init__(self, engine: Engine, submit: Callable[[C.Command], object],
                 clock_ms: Callable[[], int], period_s: float = 1.0,
                 anchor: int = 5_000_000, seed: int | None = None) -> None:
        self.engine = engine
        self.submit = submit
        self.clock_ms = clock_ms
        self.period_s = period_s
        self.anchor = anchor
        self.rng = random.Random(seed)
        self._walk: dict[str, int] = {}

    def index_commands(self) -> list[C.Command]:
        now = self.clock_ms()
        cmds: list[C.Command] = []
        for name, pm in sorted(self.engine.perp.markets.items()):
            tick = self.engine.markets[name].tick_size
            walk = self._walk.get(name, pm.index or self.anchor)
            walk = max(tick, walk + self.rng.randint(-3, 3) * tick)
            self._walk[name] = walk
            base = spot_anchor(self.engine, name, walk)
            sources = [
                C.SourcePrice(source=f"demo-{i}",
                              price=max(tick, base + self.rng.randint(-2, 2) * tick), ts=now)
                for i in range(max(3, pm.min_sources))
            ]
            cmds.append(C.UpdateIndex(market=name, sources=sources))
            interval = pm.funding_interval_ms
            last = pm.last_funding_ts
            if (now // interval > last // interval) if last else pm.index:
                cmds.append(C.FundingTick(market=name))
        return cmds

    async def run(self) -> None:
        while True:
            for cmd in self.index_commands():
                result = self.submit(cmd)
                if asyncio.isfuture(result) or asyncio.iscoroutine(result):
                    with contextlib.suppress(Exception):
                        await result
            await asyncio.sleep(self.period_s)
