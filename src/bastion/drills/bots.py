"""Traffic bots: market makers quoting around the index and takers crossing the spread.

They are ordinary API users (``TradingClient``): they read the public market mode and price,
adapt what they send to the mode (post-only while the market is ``post_only``/``recovery``,
nothing new while it is ``halted``/``cancel_only``), and record every order-entry attempt in a
shared ``Tape`` so a drill can count refusals, pauses and acknowledged orders afterwards. The
same bots are the live demo traffic of ``make run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

from bastion.drills.client import ApiReply, TradingClient

#: refusals that are a normal outcome of a valid order in the mode the bot saw (a quote that
#: became crossing, an IOC that found nothing, a margin check): anything else refusing an
#: order that the observed mode allowed counts as a valid order refused
NORMAL_REFUSALS = frozenset({
    "POST_ONLY_WOULD_CROSS", "NO_LIQUIDITY", "FOK_NOT_FILLABLE", "INSUFFICIENT_FUNDS",
    "INSUFFICIENT_MARGIN", "REDUCE_ONLY", "UNKNOWN_ORDER", "DUPLICATE_CLIENT_ID",
})
#: modes in which a bot sends new orders, and whether they must be post-only
ENTRY_MODES = {"open": False, "post_only": True, "recovery": True}


@dataclass
class Attempt:
    t: float            # seconds since the tape started
    bot: str
    account: int
    market: str
    mode: str           # the mode the bot had last observed when it sent the order
    ok: bool
    code: str
    latency: float
    order_id: int = 0
    client_id: str = ""


@dataclass
class Tape:
    """Every order-entry attempt of every bot, in the order the replies arrived."""

    t0: float = field(default_factory=time.monotonic)
    attempts: list[Attempt] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def record(self, a: Attempt) -> None:
        self.attempts.append(a)

    def acknowledged(self) -> list[Attempt]:
        return [a for a in self.attempts if a.ok and a.order_id]

    def valid_refused(self) -> list[Attempt]:
        return [a for a in self.attempts
                if not a.ok and a.code != "TRANSPORT" and a.code not in NORMAL_REFUSALS]

    def longest_pause(self, start: float, end: float) -> tuple[float, float]:
        """Longest stretch without an accepted order between ``start`` and ``end``:
        (seconds, where it began)."""
        times = [start, *sorted(a.t for a in self.attempts if a.ok and start <= a.t <= end), end]
        best, at = 0.0, start
        for a, b in zip(times, times[1:], strict=False):
            if b - a > best:
                best, at = b - a, a
        return best, at


@dataclass
class MarketView:
    """What a bot knows of a market: grid, mode and a reference price (decimal strings)."""

    market: str
    kind: str
    tick: Decimal
    lot: Decimal
    min_qty: Decimal
    min_notional: Decimal
    mode: str = "open"
    ref: Decimal | None = None

    @classmethod
    def parse(cls, body: dict[str, Any]) -> MarketView:
        return cls(market=body["market"], kind=body["kind"], tick=Decimal(body["tick_size"]),
                   lot=Decimal(body["lot_size"]), min_qty=Decimal(body["min_qty"]),
                   min_notional=Decimal(body["min_notional"]), mode=body["mode"])

    def price(self, value: Decimal) -> str:
        ticks = (value / self.tick).to_integral_value(ROUND_DOWN)
        return str(max(ticks, Decimal(1)) * self.tick)

    def qty(self, lots: int) -> str:
        lots_min = (self.min_qty / self.lot).to_integral_value()
        if self.ref:
            need = (self.min_notional / (self.ref * self.lot)).to_integral_value() + 1
            lots_min = max(lots_min, need)
        return str(max(lots, int(lots_min)) * self.lot)


class Bot:
    """A loop that refreshes its view of the market, then acts, every ``period`` seconds."""

    role = "bot"

    def __init__(self, name: str, client: TradingClient, account: int, market: str,
                 tape: Tape, rng: random.Random, period: float,
                 start_ref: Decimal | None = None) -> None:
        self.name = name
        self.start_ref = start_ref
        self.client = client
        self.account = account
        self.market = market
        self.tape = tape
        self.rng = rng
        self.period = period
        self.view: MarketView | None = None
        self.paused = False
        self._n = 0

    async def refresh(self) -> bool:
        reply = await self.client.public(f"/v1/markets/{self.market}")
        if not reply.ok:
            return False
        view = MarketView.parse(reply.body)
        view.ref = await self.reference(view)
        self.view = view
        return view.ref is not None

    async def reference(self, view: MarketView) -> Decimal | None:
        if view.kind == "perp":
            r = await self.client.public(f"/v1/markets/{self.market}/funding")
            if r.ok and r.body.get("index_price"):
                return Decimal(r.body["index_price"])
            return None
        r = await self.client.public(f"/v1/markets/{self.market}/ticker")
        if r.ok and isinstance(r.body, dict):
            bid, ask, last = r.body.get("bid"), r.body.get("ask"), r.body.get("last")
            if bid and ask:
                return (Decimal(bid) + Decimal(ask)) / 2
            if last:
                return Decimal(last)
        return self.view.ref if self.view and self.view.ref else self.start_ref

    async def place(self, **order: Any) -> ApiReply:
        assert self.view is not None
        self._n += 1
        cid = f"{self.name}-{self._n}"
        sent_mode = self.view.mode
        reply = await self.client.place(market=self.market, client_order_id=cid, **order)
        body = reply.body if isinstance(reply.body, dict) else {}
        self.tape.record(Attempt(
            t=self.tape.now(), bot=self.name, account=self.account, market=self.market,
            mode=sent_mode, ok=reply.ok, code="" if reply.ok else reply.code,
            latency=reply.seconds, order_id=int(body.get("order_id", 0) or 0) if reply.ok else 0,
            client_id=cid))
        return reply

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not self.paused:
                try:
                    if await self.refresh():
                        await self.act()
                except (KeyError, ValueError, TypeError, ArithmeticError):
                    pass  # a reply we could not read (server restarting): try next round
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.period * (0.5 + self.rng.random()))

    async def act(self) -> None:
        raise NotImplementedError


class MarketMaker(Bot):
    """Keeps ``levels`` post-only quotes a side, ``spread_ticks`` apart, around the reference.
    Requotes the way real makers do: the new quotes first, then the old ones cancelled by id,
    so the book is never left empty between two rounds."""

    role = "maker"

    def __init__(self, *args: Any, levels: int = 3, spread_ticks: int = 10,
                 lots: int = 2, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.levels = levels
        self.spread_ticks = spread_ticks
        self.lots = lots
        self.live: list[int] = []
        self.started = False

    async def act(self) -> None:
        view = self.view
        assert view is not None and view.ref is not None
        if not self.started:  # quotes left by an earlier run of this account
            self.started = (await self.client.cancel_all(self.market)).status != 0
        old, self.live = self.live, []
        if view.mode in ENTRY_MODES:
            skew = self.rng.randint(-2, 2)
            for i in range(1, self.levels + 1):
                off = view.tick * (self.spread_ticks * i + skew)
                for side, px in (("buy", view.ref - off), ("sell", view.ref + off)):
                    lots = self.lots + self.rng.randint(0, 2)
                    reply = await self.place(side=side, price=view.price(px), post_only=True,
                                             quantity=view.qty(lots))
                    if reply.ok and isinstance(reply.body, dict):
                        self.live.append(int(reply.body["order_id"]))
        for order_id in old:
            await self.client.cancel(order_id)


class Taker(Bot):
    """While the market is ``open``: IOC limit orders through the spread, alternating sides,
    so trades happen and positions turn over. In post-only modes it rests a passive order."""

    role = "taker"

    def __init__(self, *args: Any, lots: int = 1, reach_bps: int = 30, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.lots = lots
        self.reach = Decimal(reach_bps) / Decimal(10_000)

    async def act(self) -> None:
        view = self.view
        assert view is not None and view.ref is not None
        side = self.rng.choice(["buy", "sell"])
        if view.mode == "open":
            px = view.ref * (1 + self.reach) if side == "buy" else view.ref * (1 - self.reach)
            await self.place(side=side, price=view.price(px), time_in_force="IOC",
                             quantity=view.qty(self.lots))
        elif ENTRY_MODES.get(view.mode):
            await self.client.cancel_all(self.market)
            off = view.tick * 40
            px = view.ref - off if side == "buy" else view.ref + off
            await self.place(side=side, price=view.price(px), post_only=True,
                             quantity=view.qty(self.lots))


@dataclass
class Crew:
    """The bots of one run: start them together, pause them, stop them."""

    bots: list[Bot]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self.tasks = [asyncio.create_task(b.run(self.stop)) for b in self.bots]

    def pause(self, paused: bool = True) -> None:
        for b in self.bots:
            b.paused = paused

    async def close(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for b in self.bots:
            await b.client.close()
