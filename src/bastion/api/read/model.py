"""What the API shows beyond the engine's live state, kept from the event stream.

The core holds only open orders and balances (it must stay small and fast). Order history,
fills, public trades, candles and 24h statistics are derived here from events, so they can
always be rebuilt by replaying the journal: they are a view, never a source of truth.
Memory is bounded: per-account history and fills and per-market trades/candles are capped.

After a restart an account's history may stay *cold* (undecoded msgpack from the checkpoint)
until something asks for it: restoring a million records costs as much as the node's own
recovery, and a query or a live event touches few accounts. The tail the node replays is put
aside per cold account and applied when it thaws, so the result is the same as a full replay.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import Any

import msgspec

from bastion.core import events as E
from bastion.core.engine import Engine
from bastion.core.perp.positions import realize
from bastion.core.perp.state import Position
from bastion.core.state import Order

log = logging.getLogger("bastion.api")

CLOSED_PER_ACCOUNT = 10_000
FILLS_PER_ACCOUNT = 10_000
TRADES_PER_MARKET = 1_000
CANDLES_PER_MARKET = 10_080  # one week of 1-minute candles
MINUTE_MS = 60_000
DAY_MS = 86_400_000

OPEN, PARTIAL, FILLED, CANCELED, EXPIRED = "open", "partially_filled", "filled", "canceled", \
    "expired"
_EXPIRE_REASONS = frozenset(("IOC", "FOK", "SELF_TRADE"))


class OrderRecord(msgspec.Struct, gc=False, array_like=True):
    """One order's full life (mutable; the API renders it). ``gc=False``: records hold only
    scalars, so the collector never has to scan the (large) history; ``array_like``: a
    checkpoint holds millions of them, without field names they are a third of the bytes."""

    order_id: int
    account: int
    market: str
    side: str
    order_type: str
    tif: str
    post_only: bool
    client_id: str
    price: int
    qty: int
    remaining: int
    reduce_only: bool
    created_ts: int
    updated_ts: int
    filled: int = 0
    filled_quote: int = 0
    fee: int = 0
    status: str = OPEN
    reason: str = ""

    @property
    def is_open(self) -> bool:
        return self.status == OPEN or self.status == PARTIAL


def record_of(ev: E.OrderAccepted) -> OrderRecord:
    return OrderRecord(ev.order_id, ev.account, ev.market, ev.side, ev.order_type, ev.tif,
                       ev.post_only, ev.client_id, ev.price, ev.qty, ev.qty,
                       bool(getattr(ev, "reduce_only", False)), ev.ts, ev.ts)


def _seed(o: Order) -> OrderRecord:
    """An open order's record from the engine alone (its history before is unknown)."""
    rec = OrderRecord(o.order_id, o.account, o.market, o.side, "limit", o.tif, o.post_only,
                      o.client_id, o.price, o.qty, o.remaining, False, o.ts, o.ts)
    rec.filled = o.qty - o.remaining
    rec.filled_quote = o.filled_quote
    rec.status = PARTIAL if rec.filled else OPEN
    return rec


class Fill(msgspec.Struct, gc=False, array_like=True):
    trade_id: int
    seq: int
    ts: int
    account: int
    market: str
    order_id: int
    is_buyer: bool
    is_maker: bool
    price: int
    qty: int
    quote_qty: int
    fee: int
    #: perpetuals: PnL this fill realized (closing part of a position), before fees
    realized: int = 0


class Candle(msgspec.Struct, gc=False, array_like=True):
    start: int
    open: int
    high: int = 0
    low: int = 0
    close: int = 0
    volume: int = 0
    quote_volume: int = 0
    trades: int = 0


def new_candle(start: int, price: int) -> Candle:
    return Candle(start, price, price, price, price)


class AccountView:
    """One account's orders. ``by_client`` is per account, keyed by the client id alone: a
    map keyed by ``(account, client_id)`` tuples is re-tracked by the garbage collector at every
    insert of a fresh tuple after a full collection untracked it, and then walked whole (every
    order ever placed) by the next young and full collections; a map of strings to ``gc=False``
    records is never tracked."""

    __slots__ = ("by_client", "closed", "fills", "open")

    def __init__(self) -> None:
        self.open: dict[int, OrderRecord] = {}
        self.by_client: dict[str, OrderRecord] = {}
        self.closed: deque[OrderRecord] = deque()
        self.fills: deque[Fill] = deque(maxlen=FILLS_PER_ACCOUNT)


#: (market, is_bid, price) of book levels an event batch may have changed
Level = tuple[str, bool, int]


class AccountRow(msgspec.Struct, array_like=True):
    """One account in a checkpoint: its open, closed (oldest first) and filled history and
    its client ids (``[client_id, order_id]``, sorted), the latter kept as they are rather
    than re-derived, since an evicted order may have held a client id another still has."""

    account: int
    open: list[OrderRecord]
    closed: list[OrderRecord]
    fills: list[Fill]
    by_client: list[tuple[str, int]]


class ColdAccount(msgspec.Struct, array_like=True):
    """An ``AccountRow`` kept encoded (msgpack ``bin``: a restart skips it without parsing it)
    until the account is first touched."""

    account: int
    row: memoryview


_ROW = msgspec.msgpack.Decoder(AccountRow)
_ENCODER = msgspec.msgpack.Encoder()
_ORDER_ID = attrgetter("order_id")


class ReadModel:
    def __init__(self, engine: Callable[[], Engine]) -> None:
        self._engine = engine
        self.orders: dict[int, OrderRecord] = {}
        self.accounts: dict[int, AccountView] = {}
        self.trades: dict[str, deque[E.Trade]] = {}
        self.candles: dict[str, OrderedDict[int, Candle]] = {}
        self.touched: set[Level] = set()
        self.touched_accounts: set[int] = set()
        #: accounts whose perpetual positions or margin may have changed in the last batch
        self.touched_positions: set[int] = set()
        self.funding: dict[str, deque[E.FundingSettled]] = {}
        #: perpetual positions as of the last applied fill, to split realized PnL per fill
        #: with the core's own ``realize`` (re-synced from the engine after every live batch)
        self.positions: dict[tuple[int, str], Position] = {}
        self.seq = 0
        #: accounts restored from a checkpoint and not decoded yet (none of their records is
        #: in ``orders`` or ``accounts``), and what happened to them since
        self.cold: dict[int, ColdAccount] = {}
        self._pending: dict[int, list[E.Event]] = {}
        #: realized PnL of put-aside perpetual fills, by (seq, trade id, is_maker): positions
        #: move in event order, not when an account thaws
        self._pending_pnl: dict[tuple[int, int, bool], int] = {}
        self._deferring = False
        self._handlers: dict[type, Callable[[Any], None]] = {
            E.OrderAccepted: self._accepted,
            E.Trade: self._trade,
            E.OrderCanceled: self._canceled,
            E.OrderAmended: self._amended,
            E.BalanceChanged: self._balance,
            E.FundingSettled: self._funding,
            E.MarginTransferred: self._margin,
            E.LeverageChanged: self._margin,
            E.Liquidated: self._margin,
            E.Deleveraged: self._margin,
            E.LossCovered: self._margin,
        }

    # ------------------------------------------------------------------ feeding

    def apply(self, events: Iterable[E.Event]) -> None:
        handlers = self._handlers
        for ev in events:
            h = handlers.get(type(ev))
            if h is not None:
                h(ev)
            if ev.seq > self.seq:
                self.seq = ev.seq

    def follow(self, events: Iterable[E.Event]) -> None:
        """``apply`` for the tail a restart replays: a cold account's events are put aside
        until it thaws instead of thawing it."""
        self._deferring = True
        try:
            self.apply(events)
        finally:
            self._deferring = False

    def _aside(self, account: int, ev: E.Event) -> bool:
        """True if ``ev`` was put aside for cold ``account`` (only events, no closures: a
        tail of a million commands must not feed the garbage collector); a cold account
        touched live is thawed first, so the caller may look up its orders."""
        if account not in self.cold:
            return False
        if self._deferring:
            pending = self._pending.get(account)
            if pending is None:
                pending = self._pending[account] = []
            pending.append(ev)
            return True
        self._thaw(account)
        return False

    def _catch_up(self, account: int, pending: list[E.Event]) -> None:
        """Apply what the tail did to a thawed account (its own part of each event)."""
        for ev in pending:
            t = type(ev)
            if t is E.Trade:
                assert isinstance(ev, E.Trade)
                for is_maker in (True, False):
                    if (ev.maker_account if is_maker else ev.taker_account) == account:
                        pnl = self._pending_pnl.pop((ev.seq, ev.trade_id, is_maker), 0)
                        self._fill(ev, is_maker, pnl, ev.price * ev.qty // self._div(ev.market))
            elif t is E.OrderAccepted:
                self._accept(ev)  # type: ignore[arg-type]
            elif t is E.OrderCanceled:
                self._cancel(ev)  # type: ignore[arg-type]
            else:
                self._amend(ev)  # type: ignore[arg-type]

    def _thaw(self, account: int) -> AccountView:
        cold = self.cold.pop(account)
        view = self.accounts[account] = AccountView()
        try:
            row = _ROW.decode(cold.row)
            opened, closed, fills, pairs = row.open, row.closed, row.fills, row.by_client
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:  # its digest checked out
            log.error("read model: account %d's checkpointed history does not decode (%s); "
                      "its open orders are reseeded from the engine", account, exc)
            opened, closed, fills, pairs = self._seeded(account), [], [], []
            self._pending.pop(account, None)  # the engine's orders already include the tail
        orders = self.orders
        view.open = dict(zip(map(_ORDER_ID, opened), opened, strict=True))
        orders.update(view.open)
        orders.update(zip(map(_ORDER_ID, closed), closed, strict=True))
        view.closed = deque(closed)
        view.fills = deque(fills, maxlen=FILLS_PER_ACCOUNT)
        by_client = view.by_client
        for client_id, order_id in pairs:
            rec = orders.get(order_id)
            if rec is not None:
                by_client[client_id] = rec
        pending = self._pending.pop(account, None)
        if pending:
            # what the tail did to this account; book levels and touched sets were reported
            # when it happened, not now
            saved = self.touched, self.touched_accounts, self.touched_positions
            self.touched, self.touched_accounts, self.touched_positions = set(), set(), set()
            try:
                self._catch_up(account, pending)
            finally:
                self.touched, self.touched_accounts, self.touched_positions = saved
        return view

    def rows(self) -> list[ColdAccount]:
        """Every account as a checkpoint holds it, by account id; a cold account with nothing
        put aside is passed on as it was read."""
        for account in list(self._pending):
            self._thaw(account)
        encode = _ENCODER.encode
        rows = [ColdAccount(a, memoryview(encode(AccountRow(
                    a, list(v.open.values()), list(v.closed), list(v.fills),
                    sorted((cid, rec.order_id) for cid, rec in v.by_client.items())))))
                for a, v in self.accounts.items()]
        rows.extend(self.cold.values())
        rows.sort(key=attrgetter("account"))
        return rows

    def seed_open_orders(self, engine: Engine) -> None:
        """Start from a running engine's open orders when the journal's beginning is gone
        (history before it is then unknown, open orders are still exact)."""
        for o in engine.orders.values():
            if o.order_id not in self.orders:
                self._add(_seed(o))
        self.seq = max(self.seq, engine.seq)

    def _seeded(self, account: int) -> list[OrderRecord]:
        return [_seed(o) for o in self._engine().orders.values() if o.account == account]

    def _view(self, account: int) -> AccountView:
        v = self.accounts.get(account)
        if v is None:
            v = self._thaw(account) if account in self.cold else AccountView()
            self.accounts[account] = v
        return v

    def _peek(self, account: int) -> AccountView | None:
        v = self.accounts.get(account)
        if v is None and account in self.cold:
            v = self._thaw(account)
        return v

    def _add(self, rec: OrderRecord) -> None:
        self.orders[rec.order_id] = rec
        view = self._view(rec.account)
        if rec.client_id:
            view.by_client[rec.client_id] = rec
        view.open[rec.order_id] = rec

    def _close(self, rec: OrderRecord) -> None:
        view = self._view(rec.account)
        view.open.pop(rec.order_id, None)
        closed = view.closed
        closed.append(rec)
        if len(closed) > CLOSED_PER_ACCOUNT:
            old = closed.popleft()
            self.orders.pop(old.order_id, None)
            if old.client_id and view.by_client.get(old.client_id) is old:
                del view.by_client[old.client_id]

    def _accepted(self, ev: E.OrderAccepted) -> None:
        self.touched.add((ev.market, ev.side == "buy", ev.price))
        self.touched_accounts.add(ev.account)
        if self.cold and self._aside(ev.account, ev):
            return
        self._add(record_of(ev))

    def _accept(self, ev: E.OrderAccepted) -> None:
        self._add(record_of(ev))

    def sync_positions(self, engine: Engine, accounts: Iterable[int]) -> None:
        """Copy ``accounts``' perpetual positions from the engine (after a live batch, so
        position changes without a fill, such as ADL, never accumulate here)."""
        books = engine.perp.positions
        for account in accounts:
            for market, book in books.items():
                pos = book.get(account)
                if pos is None:
                    self.positions.pop((account, market), None)
                else:
                    self.positions[(account, market)] = Position(
                        account=account, market=market, size=pos.size, cost=pos.cost,
                        funding_index=0)
            for key in [k for k in self.positions if k[0] == account and k[1] not in books]:
                del self.positions[key]

    def _realize(self, account: int, market: str, delta: int, amount: int) -> int:
        key = (account, market)
        pos = self.positions.get(key)
        if pos is None:
            pos = self.positions[key] = Position(account=account, market=market, size=0,
                                                 cost=0, funding_index=0)
        realized = realize(pos, delta, amount)
        if pos.size == 0:
            del self.positions[key]
        return realized

    def _trade(self, ev: E.Trade) -> None:
        mkt = self._engine().markets.get(ev.market)
        div = mkt.price_div if mkt is not None else 1
        quote = ev.price * ev.qty // div
        taker_buys = ev.taker_side == "buy"
        self.touched.add((ev.market, not taker_buys, ev.price))
        realized = (0, 0)
        if mkt is not None and mkt.kind != "spot":
            self.touched_positions.add(ev.maker_account)
            self.touched_positions.add(ev.taker_account)
            # the core moves the buyer first, then the seller (``PerpEngine.trade``)
            buyer, seller = ((ev.taker_account, ev.maker_account) if taker_buys
                             else (ev.maker_account, ev.taker_account))
            bought = self._realize(buyer, ev.market, ev.qty, quote)
            sold = self._realize(seller, ev.market, -ev.qty, quote)
            realized = (sold, bought) if taker_buys else (bought, sold)  # (maker, taker)
        for account, is_maker, pnl in ((ev.maker_account, True, realized[0]),
                                       (ev.taker_account, False, realized[1])):
            self.touched_accounts.add(account)
            if self.cold and account in self.cold and self._deferring:
                if is_maker or account != ev.maker_account:  # a self-trade is put aside once
                    self._aside(account, ev)
                if pnl:
                    self._pending_pnl[(ev.seq, ev.trade_id, is_maker)] = pnl
                continue
            if self.cold:
                self._aside(account, ev)  # thaws it
            self._fill(ev, is_maker, pnl, quote)
        trades = self.trades.get(ev.market)
        if trades is None:
            trades = self.trades[ev.market] = deque(maxlen=TRADES_PER_MARKET)
        trades.append(ev)
        self._candle(ev.market, ev.ts, ev.price, ev.qty, quote)

    def _div(self, market: str) -> int:
        mkt = self._engine().markets.get(market)
        return mkt.price_div if mkt is not None else 1

    def _fill(self, ev: E.Trade, is_maker: bool, pnl: int, quote: int) -> None:
        """One side of a trade, in the account's own history."""
        if is_maker:
            oid, account, remaining, fee = (ev.maker_order, ev.maker_account,
                                            ev.maker_remaining, ev.maker_fee)
        else:
            oid, account, remaining, fee = (ev.taker_order, ev.taker_account,
                                            ev.taker_remaining, ev.taker_fee)
        rec = self.orders.get(oid)
        if rec is not None:
            rec.filled += ev.qty
            rec.filled_quote += quote
            rec.fee += fee
            rec.remaining = remaining
            rec.updated_ts = ev.ts
            if remaining == 0:
                rec.status = FILLED
                self._close(rec)
            else:
                rec.status = PARTIAL
        self._view(account).fills.append(Fill(ev.trade_id, ev.seq, ev.ts, account, ev.market, oid,
                                              (ev.taker_side == "buy") != is_maker, is_maker,
                                              ev.price, ev.qty, quote, fee, pnl))

    def _candle(self, market: str, ts: int, price: int, qty: int, quote: int) -> None:
        candles = self.candles.get(market)
        if candles is None:
            candles = self.candles[market] = OrderedDict()
        start = ts - ts % MINUTE_MS
        c = candles.get(start)
        if c is None:
            c = candles[start] = new_candle(start, price)
            if len(candles) > CANDLES_PER_MARKET:
                candles.popitem(last=False)
        if price > c.high:
            c.high = price
        if price < c.low:
            c.low = price
        c.close = price
        c.volume += qty
        c.quote_volume += quote
        c.trades += 1

    def _canceled(self, ev: E.OrderCanceled) -> None:
        self.touched_accounts.add(ev.account)
        if self.cold and self._aside(ev.account, ev):
            return
        self._cancel(ev)

    def _cancel(self, ev: E.OrderCanceled) -> None:
        rec = self.orders.get(ev.order_id)
        if rec is None:
            return
        self.touched.add((rec.market, rec.side == "buy", rec.price))
        rec.remaining = ev.remaining
        rec.reason = ev.reason
        rec.status = EXPIRED if ev.reason in _EXPIRE_REASONS else CANCELED
        rec.updated_ts = ev.ts
        self._close(rec)

    def _amended(self, ev: E.OrderAmended) -> None:
        self.touched_accounts.add(ev.account)
        if self.cold and self._aside(ev.account, ev):
            return
        self._amend(ev)

    def _amend(self, ev: E.OrderAmended) -> None:
        rec = self.orders.get(ev.order_id)
        if rec is None:
            return
        self.touched.add((rec.market, rec.side == "buy", rec.price))
        self.touched.add((rec.market, rec.side == "buy", ev.price))
        rec.price = ev.price
        rec.qty = ev.qty
        rec.remaining = ev.remaining
        rec.updated_ts = ev.ts

    def _balance(self, ev: E.BalanceChanged) -> None:
        self.touched_accounts.add(ev.account)

    def _margin(self, ev: E.Event) -> None:
        account = getattr(ev, "account", 0)
        self.touched_accounts.add(account)
        self.touched_positions.add(account)

    def _funding(self, ev: E.FundingSettled) -> None:
        hist = self.funding.get(ev.market)
        if hist is None:
            hist = self.funding[ev.market] = deque(maxlen=1_000)
        hist.append(ev)

    # ------------------------------------------------------------------ queries

    def order(self, account: int, order_id: int) -> OrderRecord | None:
        if self.cold:
            self._peek(account)
        rec = self.orders.get(order_id)
        return rec if rec is not None and rec.account == account else None

    def order_by_client(self, account: int, client_id: str) -> OrderRecord | None:
        view = self._peek(account)
        return view.by_client.get(client_id) if view is not None else None

    def open_orders(self, account: int, market: str | None = None) -> list[OrderRecord]:
        view = self._peek(account)
        if view is None:
            return []
        return [r for r in view.open.values() if market is None or r.market == market]

    def all_orders(self, account: int, market: str | None = None) -> list[OrderRecord]:
        """Closed (most recent capped) and open orders, oldest first."""
        view = self._peek(account)
        if view is None:
            return []
        out = [r for r in view.closed if market is None or r.market == market]
        out.extend(r for r in view.open.values() if market is None or r.market == market)
        out.sort(key=lambda r: r.order_id)
        return out

    def fills(self, account: int, market: str | None = None) -> list[Fill]:
        view = self._peek(account)
        if view is None:
            return []
        return [f for f in view.fills if market is None or f.market == market]

    def recent_trades(self, market: str, limit: int) -> list[E.Trade]:
        trades = self.trades.get(market)
        if not trades:
            return []
        return list(trades)[-limit:]

    def klines(self, market: str, interval_ms: int, limit: int, start: int | None = None,
               end: int | None = None, now: int | None = None) -> list[Candle]:
        """Candles of ``interval_ms`` (a multiple of a minute) aggregated from 1m candles,
        one for every interval as Binance gives them: an interval without trades has open =
        high = low = close = the previous close and volume 0. Intervals before the market's
        first (remembered) trade are not invented. ``now`` extends the series to the current
        interval; the window is bounded by ``limit``, so the cost never depends on how long a
        market was idle."""
        candles = self.candles.get(market)
        if not candles or limit <= 0:
            return []
        step = interval_ms
        last_start = next(reversed(candles))
        hi = end if end is not None else (now if now is not None else last_start)
        hi -= hi % step
        if start is not None:
            b0 = start - start % step
            hi = min(hi, b0 + (limit - 1) * step)
        else:
            b0 = hi - (limit - 1) * step
        if hi < b0:
            return []
        prev_close: int | None = None
        buckets: dict[int, Candle] = {}
        for c in candles.values():
            if c.start < b0:
                prev_close = c.close
                continue
            if c.start >= hi + step:
                break
            bucket = c.start - c.start % step
            agg = buckets.get(bucket)
            if agg is None:
                agg = buckets[bucket] = new_candle(bucket, c.open)
                agg.high, agg.low = c.high, c.low
            agg.high = max(agg.high, c.high)
            agg.low = min(agg.low, c.low)
            agg.close = c.close
            agg.volume += c.volume
            agg.quote_volume += c.quote_volume
            agg.trades += c.trades
        out: list[Candle] = []
        for bucket in range(b0, hi + 1, step):
            agg = buckets.get(bucket)
            if agg is None:
                if prev_close is None:
                    continue
                agg = new_candle(bucket, prev_close)
            out.append(agg)
            prev_close = agg.close
        return out

    def stats_24h(self, market: str, now_ms: int) -> Candle | None:
        """Open/high/low/close/volume over the last 24 hours (1-minute resolution)."""
        candles = self.candles.get(market)
        if not candles:
            return None
        since = now_ms - DAY_MS
        agg: Candle | None = None
        for c in reversed(candles.values()):
            if c.start < since - MINUTE_MS + 1:
                break
            if agg is None:
                agg = new_candle(c.start, c.open)
                agg.high, agg.low, agg.close = c.high, c.low, c.close
            else:
                agg.open = c.open
                agg.start = c.start
                agg.high = max(agg.high, c.high)
                agg.low = min(agg.low, c.low)
            agg.volume += c.volume
            agg.quote_volume += c.quote_volume
            agg.trades += c.trades
        return agg
