"""Binance user-data streams: ``executionReport``, ``outboundAccountPosition`` and
``balanceUpdate`` (spot), ``ORDER_TRADE_UPDATE`` and ``ACCOUNT_UPDATE`` (USD-M), rendered from
the same event batches as every other stream.

A sink is one place an account's events go: a listenKey stream on a stream connection (spot or
futures), or a WebSocket API ``userDataStream.subscribe`` subscription (spot; the events are
then wrapped as ``{"subscriptionId": N, "event": {...}}``). Each event is rendered once per
surface and account, then queued on every sink of that account.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

import msgspec

from bastion.api.binance.rest import bsym
from bastion.api.convert import from_units
from bastion.api.native import perps
from bastion.api.native import views as V
from bastion.api.read.model import OrderRecord
from bastion.core import events as E
from bastion.core.engine import Engine

if TYPE_CHECKING:
    from bastion.api.app_context import Context
    from bastion.api.binance.ws import StreamConn

_enc = msgspec.json.Encoder()

SPOT, FUTURES = "spot", "futures"
_STATUS = {"open": "NEW", "partially_filled": "PARTIALLY_FILLED", "filled": "FILLED",
           "canceled": "CANCELED", "expired": "EXPIRED"}
_EXPIRE = frozenset(("IOC", "FOK", "SELF_TRADE"))


class Sink:
    """One destination of an account's user-data events."""

    __slots__ = ("account", "api_key", "conn", "listen_key", "subscription_id", "surface")

    def __init__(self, conn: StreamConn, account: int, api_key: str, surface: str,
                 listen_key: str = "", subscription_id: int | None = None) -> None:
        self.conn = conn
        self.account = account
        self.api_key = api_key
        self.surface = surface
        self.listen_key = listen_key
        self.subscription_id = subscription_id

    def send(self, raw: bytes) -> None:
        if self.subscription_id is not None:
            self.conn.send(b'{"subscriptionId":' + str(self.subscription_id).encode()
                           + b',"event":' + raw + b"}")
        elif self.conn.combined:
            self.conn.send(b'{"stream":' + _enc.encode(self.listen_key) + b',"data":' + raw
                           + b"}")
        else:
            self.conn.send(raw)


class UserStreams:
    """Sinks by account; ``publish`` is a ``Gateway`` listener."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.sinks: dict[int, set[Sink]] = defaultdict(set)

    def add(self, sink: Sink) -> None:
        self.sinks[sink.account].add(sink)

    def remove(self, sink: Sink) -> None:
        sinks = self.sinks.get(sink.account)
        if sinks is not None:
            sinks.discard(sink)
            if not sinks:
                del self.sinks[sink.account]

    def of_api_key(self, api_key: str) -> list[Sink]:
        return [s for sinks in self.sinks.values() for s in sinks if s.api_key == api_key]

    def publish(self, events: list[E.Event], deltas: list[Any]) -> None:
        if not self.sinks:
            return
        engine = self.ctx.gateway.engine
        rm = self.ctx.gateway.readmodel
        per_account: dict[int, list[tuple[str, bytes]]] = defaultdict(list)
        spot_assets: dict[int, set[str]] = defaultdict(set)
        perp_markets: dict[int, set[str]] = defaultdict(set)
        batch = _BatchFills(events, engine)
        sinks = self.sinks
        for i, ev in enumerate(events):
            t = type(ev)
            if t is E.Trade:
                assert isinstance(ev, E.Trade)
                m = engine.markets.get(ev.market)
                if m is None:
                    continue
                futures = m.kind != "spot"
                for acct, oid, rem, fee, maker in (
                        (ev.maker_account, ev.maker_order, ev.maker_remaining, ev.maker_fee,
                         True),
                        (ev.taker_account, ev.taker_order, ev.taker_remaining, ev.taker_fee,
                         False)):
                    if acct not in sinks:
                        continue
                    rec = rm.orders.get(oid)
                    if rec is None:
                        continue
                    cum, cum_quote = batch.at(rec, i)
                    fill = _Exec("TRADE", "FILLED" if rem == 0 else "PARTIALLY_FILLED",
                                 ev.qty, ev.price, fee, ev.trade_id, maker, cum, cum_quote,
                                 ev.ts)
                    per_account[acct].append(_render_order(engine, rec, fill, futures))
                    if futures:
                        perp_markets[acct].add(ev.market)
                    else:
                        spot_assets[acct].update((m.base, m.quote))
            elif t is E.OrderAccepted or t is E.OrderCanceled or t is E.OrderAmended:
                acct = ev.account  # type: ignore[attr-defined]
                if acct not in sinks:
                    continue
                rec = rm.orders.get(ev.order_id)  # type: ignore[attr-defined]
                m = engine.markets.get(ev.market)  # type: ignore[attr-defined]
                if rec is None or m is None:
                    continue
                futures = m.kind != "spot"
                cum, cum_quote = batch.at(rec, i)
                if t is E.OrderAccepted:
                    x = _Exec("NEW", "NEW", 0, 0, 0, -1, False, cum, cum_quote, ev.ts)
                elif t is E.OrderCanceled:
                    reason = ev.reason  # type: ignore[attr-defined]
                    status = "EXPIRED" if reason in _EXPIRE else "CANCELED"
                    x = _Exec(status, status, 0, 0, 0, -1, False, cum, cum_quote, ev.ts)
                else:
                    x = _Exec("AMENDMENT" if futures else "REPLACED",
                              "PARTIALLY_FILLED" if cum else "NEW", 0, 0, 0, -1, False, cum,
                              cum_quote, ev.ts)
                per_account[acct].append(_render_order(engine, rec, x, futures))
                if not futures:
                    spot_assets[acct].update((m.base, m.quote))
            elif t is E.BalanceChanged:
                assert isinstance(ev, E.BalanceChanged)
                if ev.account not in sinks:
                    continue
                dp = engine.assets[ev.asset].decimals
                per_account[ev.account].append((SPOT, _enc.encode({
                    "e": "balanceUpdate", "E": ev.ts, "a": ev.asset,
                    "d": perps.amount(ev.delta, dp), "T": ev.ts})))
                spot_assets[ev.account].add(ev.asset)
        for acct in rm.touched_positions:
            if acct in sinks:
                perp_markets[acct]  # noqa: B018 - margin moved: an ACCOUNT_UPDATE is due
        ts = engine.ts
        for acct, assets in spot_assets.items():
            per_account[acct].append((SPOT, _enc.encode(_account_position(engine, acct,
                                                                          assets, ts))))
        for acct, markets in perp_markets.items():
            per_account[acct].append((FUTURES, _enc.encode(
                _account_update(self.ctx, acct, markets, ts))))
        for acct, msgs in per_account.items():
            for sink in sinks.get(acct, ()):
                for surface, raw in msgs:
                    if surface == sink.surface:
                        sink.send(raw)

    def expired(self, sink: Sink, ts: int) -> None:
        """Binance's last word on a listenKey that expired or was closed."""
        sink.send(_enc.encode({"e": "listenKeyExpired", "E": ts, "listenKey": sink.listen_key}))


class _Exec:
    __slots__ = ("cum", "cum_quote", "exec_type", "fee", "maker", "price", "qty", "status",
                 "trade_id", "ts")

    def __init__(self, exec_type: str, status: str, qty: int, price: int, fee: int,
                 trade_id: int, maker: bool, cum: int, cum_quote: int, ts: int) -> None:
        self.exec_type = exec_type
        self.status = status
        self.qty = qty
        self.price = price
        self.fee = fee
        self.trade_id = trade_id
        self.maker = maker
        self.cum = cum
        self.cum_quote = cum_quote
        self.ts = ts


class _BatchFills:
    """Per-event cumulative fills: the read model already holds each order's state after the
    whole batch, so the fills later in the batch are subtracted back out (each at the quote
    value the read model added for it)."""

    def __init__(self, events: list[E.Event], engine: Engine) -> None:
        self.trades: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
        for i, ev in enumerate(events):
            if type(ev) is E.Trade:
                assert isinstance(ev, E.Trade)
                m = engine.markets.get(ev.market)
                quote = ev.price * ev.qty // m.price_div if m is not None else 0
                self.trades[ev.maker_order].append((i, ev.qty, quote))
                self.trades[ev.taker_order].append((i, ev.qty, quote))

    def at(self, rec: OrderRecord, index: int) -> tuple[int, int]:
        """Filled quantity and quote of the order right after event ``index`` of the batch."""
        later = [r for r in self.trades.get(rec.order_id, ()) if r[0] > index]
        return (rec.filled - sum(r[1] for r in later),
                rec.filled_quote - sum(r[2] for r in later))


def _order_type(rec: OrderRecord, futures: bool) -> str:
    if rec.order_type == "market":
        return "MARKET"
    return "LIMIT_MAKER" if rec.post_only and not futures else "LIMIT"


def _render_order(engine: Engine, rec: OrderRecord, x: _Exec, futures: bool
                  ) -> tuple[str, bytes]:
    m = engine.markets[rec.market]
    u = V.market_units(engine, m)
    price = u.price(rec.price if rec.order_type == "limit" else 0)
    last_quote = x.price * x.qty // m.price_div
    fee = u.quote_amount(x.fee) if x.fee >= 0 else "-" + u.quote_amount(-x.fee)
    tif = "GTX" if futures and rec.post_only else rec.tif
    if futures:
        avg = u.avg_price(x.cum_quote, x.cum) or u.price(0)
        return FUTURES, _enc.encode({"e": "ORDER_TRADE_UPDATE", "E": x.ts, "T": x.ts, "o": {
            "s": bsym(m), "c": rec.client_id, "S": rec.side.upper(),
            "o": _order_type(rec, True), "f": tif, "q": u.qty(rec.qty), "p": price,
            "ap": avg, "sp": u.price(0), "x": x.exec_type, "X": x.status, "i": rec.order_id,
            "l": u.qty(x.qty), "z": u.qty(x.cum), "L": u.price(x.price), "N": u.quote,
            "n": fee, "T": x.ts, "t": max(x.trade_id, 0), "b": "0", "a": "0", "m": x.maker,
            "R": rec.reduce_only, "wt": "CONTRACT_PRICE", "ot": _order_type(rec, True),
            "ps": "BOTH", "cp": False, "rp": "0", "pP": False, "si": 0, "ss": 0,
            "V": "EXPIRE_TAKER", "pm": "NONE", "gtd": 0}})
    return SPOT, _enc.encode({
        "e": "executionReport", "E": x.ts, "s": bsym(m), "c": rec.client_id,
        "S": rec.side.upper(), "o": _order_type(rec, False), "f": tif, "q": u.qty(rec.qty),
        "p": price, "P": u.price(0), "F": u.qty(0), "g": -1,
        "C": rec.client_id if x.exec_type == "CANCELED" else "", "x": x.exec_type,
        "X": x.status, "r": "NONE", "i": rec.order_id, "l": u.qty(x.qty), "z": u.qty(x.cum),
        "L": u.price(x.price), "n": fee, "N": u.quote if x.trade_id >= 0 else None,
        "T": x.ts, "t": x.trade_id, "I": 0, "w": x.status in ("NEW", "PARTIALLY_FILLED"),
        "m": x.maker, "M": False, "O": rec.created_ts, "Z": u.quote_amount(x.cum_quote),
        "Y": u.quote_amount(last_quote), "Q": u.quote_amount(0), "W": rec.created_ts,
        "V": "EXPIRE_TAKER"})


def _account_position(engine: Engine, account: int, assets: set[str], ts: int
                      ) -> dict[str, Any]:
    acct = engine.accounts.get(account)
    rows = []
    for asset in sorted(assets):
        dp = engine.assets[asset].decimals
        free = acct.available.get(asset, 0) if acct else 0
        held = acct.held.get(asset, 0) if acct else 0
        rows.append({"a": asset, "f": from_units(free, dp), "l": from_units(held, dp)})
    return {"e": "outboundAccountPosition", "E": ts, "u": ts, "B": rows}


def _account_update(ctx: Context, account: int, markets: set[str], ts: int) -> dict[str, Any]:
    engine = ctx.gateway.engine
    acct = perps.binance_account(ctx, account)
    balances = [{"a": a["asset"], "wb": a["walletBalance"], "cw": a["crossWalletBalance"],
                 "bc": "0"} for a in acct["assets"]]
    open_rows = {r["symbol"]: r for r in acct["positions"]}
    rows = []
    for name in sorted(markets):
        m = engine.markets[name]
        r = open_rows.get(bsym(m))
        if r is None:
            rows.append({"s": bsym(m), "pa": "0", "ep": "0", "bep": "0", "cr": "0",
                         "up": "0", "mt": "cross", "iw": "0", "ps": "BOTH", "ma": m.quote})
        else:
            rows.append({"s": r["symbol"], "pa": r["positionAmt"], "ep": r["entryPrice"],
                         "bep": r["breakEvenPrice"], "cr": "0", "up": r["unRealizedProfit"],
                         "mt": "cross", "iw": "0", "ps": "BOTH", "ma": r["marginAsset"]})
    return {"e": "ACCOUNT_UPDATE", "E": ts, "T": ts, "a": {"m": "ORDER", "B": balances,
                                                          "P": rows}}
