"""Binance WebSocket market streams (spot and USD-M), fed by the gateway's one event fan-out.

Stream names are Binance's: ``<symbol>@depth[@100ms]``, ``<symbol>@depth<5|10|20>[@100ms]``,
``@trade``, ``@aggTrade``, ``@kline_<interval>``, ``@bookTicker``, ``@ticker``,
``@miniTicker`` and, for
perpetuals, ``@markPrice[@1s]`` and ``!markPrice@arr[@1s]``. ``StreamHub.publish`` is a
``Gateway`` listener: it receives the same event batches and book deltas as the native
WebSocket hub (one read model, one set of book mirrors), renders each message once per stream
name and queues the same bytes on every subscribed connection.

Depth update ids are engine sequence numbers, continuous with ``lastUpdateId`` of the REST
depth (the book mirror's sequence): a spot event carries ``U`` = previous event's ``u`` + 1, so
Binance's spot algorithm (``U <= lastUpdateId+1 <= u``, then ``U == previous u + 1``) holds; a
futures event carries ``pu`` = previous ``u`` and ``U`` = ``pu`` (the first event after a
snapshot always straddles ``lastUpdateId``, as the futures algorithm requires). Quantities are
absolute, so an overlap is harmless. Like Binance's, a diff-depth stream sends at its update
speed (spot 1,000 ms or ``@100ms``, futures 250 ms or ``@100ms``/``@500ms``) one event that
merges every level changed since the last one: the cost of fanning out depth is then bounded
by the speed, not by the order rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from bastion.api.binance.rest import bsym, ticker_24h
from bastion.api.native import perps
from bastion.api.native import views as V
from bastion.api.native.routes import INTERVALS
from bastion.core import events as E
from bastion.core.state import Market

if TYPE_CHECKING:
    from bastion.api.app_context import Context
    from bastion.api.binance.ws import StreamConn

_enc = msgspec.json.Encoder()

SPOT, FUTURES = "spot", "futures"
PARTIAL_LEVELS = (5, 10, 20)
#: how often timed streams are rendered (s); each stream then keeps its own Binance speed
TICK_S = 0.1


class Spec(NamedTuple):
    """One parsed stream name. ``name`` is what the client sees in combined payloads and in
    ``LIST_SUBSCRIPTIONS``; ``key`` (surface + name) identifies the stream server-side."""

    name: str
    kind: str  # depth partial trade aggTrade kline bookTicker ticker markPrice
    market: str  # engine market name; "" for all-market and user streams
    arg: str  # kline interval, partial levels, "mini" (@miniTicker) or "all" (!markPrice@arr)
    period_ms: int  # timed streams: minimum time between two messages

    def key(self, surface: str) -> str:
        return surface + "|" + self.name


class StreamError(Exception):
    """A stream name or frame Binance would refuse: ``{"code": code, "msg": msg}``."""

    def __init__(self, msg: str, code: int = 2) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def _markets(engine_markets: dict[str, Market], surface: str) -> dict[str, Market]:
    perp = surface == FUTURES
    return {bsym(m).lower(): m for m in engine_markets.values()
            if (m.kind != "spot") == perp}


def parse(name: str, surface: str, markets: dict[str, Market]) -> Spec:
    """A Binance stream name -> ``Spec``; market lookups are per surface (``BTCUSDT`` is the
    spot market on the spot endpoints and the perpetual on the futures ones)."""
    if not isinstance(name, str) or not 0 < len(name) <= 200 or not name.isascii():
        raise StreamError(f"Invalid request: invalid stream name {str(name)[:60]!r}")
    futures = surface == FUTURES
    if name.startswith("!"):
        body = name.lower()
        if futures and body in ("!markprice@arr", "!markprice@arr@1s", "!markprice@arr@3s"):
            return Spec(name, "markPrice", "", "all", 1000 if body.endswith("@1s") else 3000)
        raise StreamError(f"Invalid request: unknown stream {name!r}")
    sym, at, rest = name.partition("@")
    m = markets.get(sym.lower())
    if not at or m is None:
        raise StreamError(f"Invalid request: unknown stream {name!r} (no such symbol on "
                          f"the {surface} endpoint)" if at else
                          f"Invalid request: unknown stream {name!r}")
    parts = rest.split("@")
    kind = parts[0].lower()
    speed = parts[1].lower() if len(parts) > 1 else ""
    if len(parts) > 2:
        raise StreamError(f"Invalid request: unknown stream {name!r}")
    canon = sym.lower() + "@" + rest
    periods = {"": 250 if futures else 1000, "0ms": 100, "100ms": 100, "250ms": 250,
               "500ms": 500, "1000ms": 1000}
    if kind == "depth" and speed in periods:
        return Spec(canon, "depth", m.market, "", periods[speed])
    if kind.startswith("depth") and kind[5:].isdigit() and int(kind[5:]) in PARTIAL_LEVELS:
        if speed in periods:
            return Spec(canon, "partial", m.market, kind[5:], periods[speed])
    elif not speed and kind == "trade":
        return Spec(canon, "trade", m.market, "", 0)
    elif not speed and kind == "aggtrade":
        return Spec(canon, "aggTrade", m.market, "", 0)
    elif not speed and kind.startswith("kline_") and rest[6:] in INTERVALS:
        return Spec(canon, "kline", m.market, rest[6:], 1000)
    elif not speed and kind == "bookticker":
        return Spec(canon, "bookTicker", m.market, "", 0)
    elif not speed and kind in ("ticker", "miniticker"):
        return Spec(canon, "ticker", m.market, "mini" if kind == "miniticker" else "", 1000)
    elif futures and kind == "markprice" and speed in ("", "1s", "3s"):
        return Spec(canon, "markPrice", m.market, "", 1000 if speed == "1s" else 3000)
    raise StreamError(f"Invalid request: unknown stream {name!r}")


def combined(name: str, raw: bytes) -> bytes:
    return b'{"stream":' + _enc.encode(name) + b',"data":' + raw + b"}"


class _Stream:
    """Subscribers of one stream name on one surface, and its timer state."""

    __slots__ = ("conns", "due", "last", "seen", "spec", "surface")

    def __init__(self, spec: Spec, surface: str) -> None:
        self.spec = spec
        self.surface = surface
        self.conns: set[StreamConn] = set()
        self.due = 0.0
        self.last: Any = None
        #: the market's change counter when this stream last rendered
        self.seen = -1

    def send(self, raw: bytes) -> None:
        wrapped: bytes | None = None
        for c in self.conns:
            if c.combined:
                if wrapped is None:
                    wrapped = combined(self.spec.name, raw)
                c.send(wrapped)
            else:
                c.send(raw)


class StreamHub:
    """Market-stream subscriptions; ``publish`` is registered with ``Gateway.add_listener``."""

    def __init__(self, ctx: Context, clock: Callable[[], float] = time.monotonic) -> None:
        self.ctx = ctx
        self.clock = clock
        self.streams: dict[str, _Stream] = {}
        #: market -> stream keys on it (real-time ones are rendered from each batch)
        self.by_market: dict[str, set[str]] = defaultdict(set)
        self.timed: set[str] = set()
        #: market -> change counter (book or trades), so timed streams render only on change
        self.changes: dict[str, int] = defaultdict(int)
        self.tops: dict[str, tuple[int, int, int, int]] = {}
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ subscriptions

    def markets(self, surface: str) -> dict[str, Market]:
        return _markets(self.ctx.gateway.engine.markets, surface)

    def add(self, conn: StreamConn, spec: Spec) -> None:
        key = spec.key(conn.surface)
        st = self.streams.get(key)
        if st is None:
            st = self.streams[key] = _Stream(spec, conn.surface)
            self.by_market[spec.market].add(key)
            if spec.period_ms:
                self.timed.add(key)
        st.conns.add(conn)

    def remove(self, conn: StreamConn, spec: Spec) -> None:
        key = spec.key(conn.surface)
        st = self.streams.get(key)
        if st is None:
            return
        st.conns.discard(conn)
        if not st.conns:
            del self.streams[key]
            self.timed.discard(key)
            keys = self.by_market.get(spec.market)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.by_market[spec.market]

    def subscribers(self) -> int:
        return len({c for st in self.streams.values() for c in st.conns})

    # ------------------------------------------------------------------ real-time streams

    def publish(self, events: list[E.Event], deltas: list[Any]) -> None:
        """One applied batch: depth deltas, best bid/ask changes and trades, rendered once
        per stream name."""
        if not self.streams:
            return
        engine = self.ctx.gateway.engine
        ts = engine.ts
        for market, prev_seq, seq, bids, asks in deltas:
            target = self._changed(market)
            if target is None:
                continue
            m, u, keys = target
            for key in keys:
                st = self.streams[key]
                kind = st.spec.kind
                if kind == "depth":  # merged until the stream's update speed comes round
                    pending = st.last
                    if pending is None:
                        pending = st.last = [prev_seq, seq, ts, {}, {}]
                    pending[1], pending[2] = seq, ts
                    pending[3].update(bids)
                    pending[4].update(asks)
                elif kind == "bookTicker":
                    self._book_ticker(st, m, u, ts, seq)
        trades: dict[str, list[E.Trade]] = {}
        for ev in events:
            if type(ev) is E.Trade:
                assert isinstance(ev, E.Trade)
                trades.setdefault(ev.market, []).append(ev)
        for market, batch in trades.items():
            target = self._changed(market)
            if target is None:
                continue
            m, u, keys = target
            for key in keys:
                st = self.streams[key]
                kind = st.spec.kind
                if kind == "trade" or kind == "aggTrade":
                    futures = st.surface == FUTURES
                    for t in batch:
                        st.send(_enc.encode(_trade(m, u, t, kind, futures)))

    def _changed(self, market: str) -> tuple[Market, V.Units, set[str]] | None:
        """Count a change of ``market``; its streams' keys with what renders them, or None
        when nobody streams it."""
        self.changes[market] += 1
        keys = self.by_market.get(market)
        if not keys:
            return None
        engine = self.ctx.gateway.engine
        m = engine.markets[market]
        return m, V.Units(engine, m), keys

    def _depth_event(self, st: _Stream) -> dict[str, Any]:
        """The levels changed since the stream's last event, each at its latest quantity
        (absolute, as Binance sends them), with the update ids the merged deltas span."""
        prev_seq, seq, ts, bids, asks = st.last
        engine = self.ctx.gateway.engine
        m = engine.markets[st.spec.market]
        u = V.Units(engine, m)
        b = [[u.price(p), u.qty(q)] for p, q in bids.items()]
        a = [[u.price(p), u.qty(q)] for p, q in asks.items()]
        futures = st.surface == FUTURES
        if futures:
            return {"e": "depthUpdate", "E": ts, "T": ts, "s": bsym(m), "U": prev_seq,
                    "u": seq, "pu": prev_seq, "b": b, "a": a}
        return {"e": "depthUpdate", "E": ts, "s": bsym(m), "U": prev_seq + 1, "u": seq,
                "b": b, "a": a}

    def _book_ticker(self, st: _Stream, m: Market, u: V.Units, ts: int, seq: int) -> None:
        book = self.ctx.gateway.engine.books[m.market]
        bid, ask = book.bids.best() or 0, book.asks.best() or 0
        lb = book.bids.levels.get(bid) if bid else None
        la = book.asks.levels.get(ask) if ask else None
        top = (bid, lb.qty if lb else 0, ask, la.qty if la else 0)
        if st.last == top:
            return
        st.last = top
        data: dict[str, Any] = {"u": seq, "s": bsym(m), "b": u.price(top[0]),
                                "B": u.qty(top[1]), "a": u.price(top[2]), "A": u.qty(top[3])}
        if st.surface == FUTURES:
            data = {"e": "bookTicker", "u": seq, "E": ts, "T": ts} | data
        st.send(_enc.encode(data))

    # ------------------------------------------------------------------ timed streams

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self.tick()
            except Exception:  # a rendering bug must not end every timed stream
                import logging

                logging.getLogger("bastion.api.binance").exception("timed streams failed")

    def tick(self) -> None:
        """Render the timed streams that are due: partial depth and tickers when their market
        changed, klines on change and when an interval closes, mark prices always."""
        now = self.clock()
        wall = time.time_ns() // 1_000_000
        changes = self.changes
        data: Any
        for key in list(self.timed):
            st = self.streams.get(key)
            if st is None or now < st.due:
                continue
            kind = st.spec.kind
            version = changes.get(st.spec.market, 0)
            changed = version != st.seen
            st.seen = version
            if kind == "depth":
                data = [self._depth_event(st)] if st.last is not None else None
                st.last = None
            elif kind == "markPrice":
                data = [self._mark_price(st, wall)]
            elif kind == "kline":
                data = self._kline(st, wall, changed)
            elif changed:
                data = [self._partial(st, wall) if kind == "partial" else self._ticker(st, wall)]
            else:
                data = None
            if data:
                st.due = now + st.spec.period_ms / 1000
                for item in data:
                    st.send(_enc.encode(item))

    def _partial(self, st: _Stream, wall: int) -> dict[str, Any]:
        gw = self.ctx.gateway
        m = gw.engine.markets[st.spec.market]
        u = V.Units(gw.engine, m)
        mirror = gw.books.mirror(m.market)
        n = int(st.spec.arg)
        # the top N without sorting the whole book: O(levels) per stream name, not O(n log n)
        bids = heapq.nlargest(n, mirror.bids.items()) if mirror else []
        asks = heapq.nsmallest(n, mirror.asks.items()) if mirror else []
        seq = mirror.seq if mirror else gw.engine.seq
        st.last = seq
        b = [[u.price(p), u.qty(q)] for p, q in bids]
        a = [[u.price(p), u.qty(q)] for p, q in asks]
        if st.surface == FUTURES:
            return {"e": "depthUpdate", "E": wall, "T": wall, "s": bsym(m), "U": seq,
                    "u": seq, "pu": seq, "b": b, "a": a}
        return {"lastUpdateId": seq, "bids": b, "asks": a}

    def _ticker(self, st: _Stream, wall: int) -> dict[str, Any]:
        gw = self.ctx.gateway
        m = gw.engine.markets[st.spec.market]
        t = ticker_24h(gw, m, st.surface == FUTURES)
        st.last = wall
        if st.spec.arg == "mini":
            return {"e": "24hrMiniTicker", "E": wall, "s": t["symbol"], "c": t["lastPrice"],
                    "o": t["openPrice"], "h": t["highPrice"], "l": t["lowPrice"],
                    "v": t["volume"], "q": t["quoteVolume"]}
        out = {"e": "24hrTicker", "E": wall, "s": t["symbol"], "p": t["priceChange"],
               "P": t["priceChangePercent"], "w": t["weightedAvgPrice"]}
        if st.surface == SPOT:
            out["x"] = t["prevClosePrice"]
        out |= {"c": t["lastPrice"], "Q": t["lastQty"]}
        if st.surface == SPOT:
            out |= {"b": t["bidPrice"], "B": t["bidQty"], "a": t["askPrice"], "A": t["askQty"]}
        return out | {"o": t["openPrice"], "h": t["highPrice"], "l": t["lowPrice"],
                      "v": t["volume"], "q": t["quoteVolume"], "O": t["openTime"],
                      "C": t["closeTime"], "F": t["firstId"], "L": t["lastId"], "n": t["count"]}

    def _mark_price(self, st: _Stream, wall: int) -> dict[str, Any] | list[dict[str, Any]]:
        engine = self.ctx.gateway.engine
        if st.spec.market:
            return _mark_row(self.ctx, engine.markets[st.spec.market], wall)
        return [_mark_row(self.ctx, m, wall) for _, m in sorted(engine.markets.items())
                if m.market in engine.perp.markets]

    def _kline(self, st: _Stream, wall: int, changed: bool) -> list[dict[str, Any]]:
        """The current kline when it changed, preceded by the closed one (``x`` true) when an
        interval ended since the last message."""
        step = INTERVALS[st.spec.arg]
        start = wall - wall % step
        out = []
        if st.last is not None and st.last < start:
            out.append(self._kline_row(st, st.last, step, wall, closed=True))
        if changed or st.last != start:
            out.append(self._kline_row(st, start, step, wall, closed=False))
        st.last = start
        return out

    def _kline_row(self, st: _Stream, start: int, step: int, wall: int,
                   closed: bool) -> dict[str, Any]:
        gw = self.ctx.gateway
        m = gw.engine.markets[st.spec.market]
        u = V.Units(gw.engine, m)
        rows = gw.readmodel.klines(m.market, step, 1, start, start + step - 1, now=wall)
        c = rows[0] if rows else None
        o, h, lo, cl = (c.open, c.high, c.low, c.close) if c else (0, 0, 0, 0)
        return {"e": "kline", "E": wall, "s": bsym(m), "k": {
            "t": start, "T": start + step - 1, "s": bsym(m), "i": st.spec.arg,
            "f": -1, "L": -1, "o": u.price(o), "c": u.price(cl), "h": u.price(h),
            "l": u.price(lo), "v": u.qty(c.volume if c else 0), "n": c.trades if c else 0,
            "x": closed, "q": u.quote_amount(c.quote_volume if c else 0), "V": u.qty(0),
            "Q": u.quote_amount(0), "B": "0"}}


def _mark_row(ctx: Context, m: Market, wall: int) -> dict[str, Any]:
    p = perps.binance_premium(ctx, m)
    return {"e": "markPriceUpdate", "E": wall, "s": p["symbol"], "p": p["markPrice"],
            "i": p["indexPrice"], "P": p["estimatedSettlePrice"], "r": p["lastFundingRate"],
            "T": p["nextFundingTime"]}


def _trade(m: Market, u: V.Units, t: E.Trade, kind: str, futures: bool) -> dict[str, Any]:
    buyer_maker = t.taker_side == "sell"
    if kind == "trade":
        if futures:
            return {"e": "trade", "E": t.ts, "T": t.ts, "s": bsym(m), "t": t.trade_id,
                    "p": u.price(t.price), "q": u.qty(t.qty), "X": "MARKET", "m": buyer_maker}
        buyer, seller = ((t.maker_order, t.taker_order) if buyer_maker
                         else (t.taker_order, t.maker_order))
        return {"e": "trade", "E": t.ts, "s": bsym(m), "t": t.trade_id, "p": u.price(t.price),
                "q": u.qty(t.qty), "b": buyer, "a": seller, "T": t.ts, "m": buyer_maker,
                "M": True}
    out = {"e": "aggTrade", "E": t.ts, "s": bsym(m), "a": t.trade_id, "p": u.price(t.price),
           "q": u.qty(t.qty), "f": t.trade_id, "l": t.trade_id, "T": t.ts, "m": buyer_maker}
    if not futures:
        out["M"] = True
    return out
