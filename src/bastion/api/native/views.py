"""Rendering engine and read-model records as native API bodies (integers -> decimal strings).

Shared by REST and WebSocket so both speak exactly the same shapes.
"""

from __future__ import annotations

from bastion.api.convert import from_units, trim
from bastion.api.native import schemas as S
from bastion.api.read.model import Fill, OrderRecord
from bastion.core.engine import Engine
from bastion.core.state import Market

PPM = 1_000_000


class Units:
    """Decimal places of one market's price, base quantity and quote amounts."""

    __slots__ = ("base", "base_dp", "market", "price_dp", "price_div", "quote", "quote_dp")

    def __init__(self, engine: Engine, mkt: Market) -> None:
        self.market = mkt.market
        self.base = mkt.base
        self.quote = mkt.quote
        self.price_dp = mkt.price_decimals
        self.base_dp = engine.assets[mkt.base].decimals
        self.quote_dp = engine.assets[mkt.quote].decimals
        self.price_div = mkt.price_div

    def price(self, value: int) -> str:
        return from_units(value, self.price_dp)

    def qty(self, value: int) -> str:
        return from_units(value, self.base_dp)

    def quote_amount(self, value: int) -> str:
        return from_units(value, self.quote_dp)

    def avg_price(self, quote: int, qty: int) -> str | None:
        """Volume-weighted fill price, rounded down to the market's price decimals."""
        if not qty:
            return None
        return self.price(quote * self.price_div // qty)


def units(engine: Engine, market: str) -> Units:
    return market_units(engine, engine.markets[market])


#: market name -> (the market record it was made from, its ``Units``); a market changed by
#: the operator (or another engine's) is a different record, so the entry is remade
_UNITS: dict[str, tuple[Market, Units]] = {}


def market_units(engine: Engine, mkt: Market) -> Units:
    """``Units(engine, mkt)``, made once per market record: order entry renders one per
    order, and both the market's and its assets' decimals are fixed once it exists."""
    hit = _UNITS.get(mkt.market)
    if hit is not None and hit[0] is mkt:
        return hit[1]
    u = Units(engine, mkt)
    _UNITS[mkt.market] = (mkt, u)
    return u


def order(u: Units, r: OrderRecord, duplicate: bool = False) -> S.Order:
    return S.Order(
        order_id=r.order_id, client_order_id=r.client_id, market=r.market,
        side=r.side,  # type: ignore[arg-type]
        type=r.order_type, time_in_force=r.tif, post_only=r.post_only,
        reduce_only=r.reduce_only,
        price=u.price(r.price) if r.order_type == "limit" else None,
        quantity=u.qty(r.qty), filled_quantity=u.qty(r.filled),
        remaining_quantity=u.qty(r.remaining if r.is_open else 0),
        average_price=u.avg_price(r.filled_quote, r.filled),
        filled_quote=u.quote_amount(r.filled_quote), fee=u.quote_amount(r.fee),
        fee_asset=u.quote, status=r.status,  # type: ignore[arg-type]
        reason=r.reason, created_at=r.created_ts, updated_at=r.updated_ts, duplicate=duplicate)


def fill(u: Units, f: Fill) -> S.Fill:
    return S.Fill(trade_id=f.trade_id, order_id=f.order_id, market=f.market,
                  side="buy" if f.is_buyer else "sell", price=u.price(f.price),
                  quantity=u.qty(f.qty), quote_quantity=u.quote_amount(f.quote_qty),
                  fee=u.quote_amount(f.fee), fee_asset=u.quote,
                  liquidity="maker" if f.is_maker else "taker", ts=f.ts)


def balances(engine: Engine, account: int) -> list[S.Balance]:
    acct = engine.accounts.get(account)
    if acct is None:
        return []
    out = []
    wallet = engine.wallet
    for asset in sorted(set(acct.available) | set(acct.held)):
        dp = engine.assets[asset].decimals
        avail = acct.available.get(asset, 0)
        held = acct.held.get(asset, 0)
        leaving = wallet.held_of(account, asset)
        out.append(S.Balance(asset=asset, available=from_units(avail, dp),
                             held=from_units(held, dp),
                             total=from_units(avail + held + leaving, dp),
                             withdrawing=from_units(leaving, dp)))
    return out


def fee_rate(ppm: int) -> str:
    return from_units(ppm, 6)


def market_info(engine: Engine, mkt: Market) -> S.MarketInfo:
    u = Units(engine, mkt)
    return S.MarketInfo(
        market=mkt.market, kind=mkt.kind, base=mkt.base, quote=mkt.quote,
        mode=mkt.mode, mode_reason=mkt.mode_reason, mode_until=mkt.mode_until,
        tick_size=trim(u.price(mkt.tick_size)), lot_size=trim(u.qty(mkt.lot_size)),
        min_qty=trim(u.qty(mkt.min_qty)), max_qty=trim(u.qty(mkt.max_qty)),
        min_notional=trim(u.quote_amount(mkt.min_notional)),
        maker_fee=trim(fee_rate(mkt.maker_fee_ppm)), taker_fee=trim(fee_rate(mkt.taker_fee_ppm)), price_decimals=mkt.price_decimals,
        base_decimals=u.base_dp, quote_decimals=u.quote_dp,
        last_price=u.price(mkt.last_price) if mkt.last_price else None,
        reference_price=u.price(mkt.ref_price) if mkt.ref_price else None)
