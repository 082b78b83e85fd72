"""Perpetual-futures views and actions at the edge: positions, cross-margin accounts, mark /
index / funding, leverage and margin transfers; native and Binance (``/fapi``) shapes.

Kept apart so spot routes never depend on perpetual internals. Everything here reads
``engine.perp`` (the core's perpetual ledger) and converts its integers exactly: prices in the
market's price decimals, sizes in the base asset's, money in the settle asset's, rates from
the core's 1e-9 fixed point.
"""

from __future__ import annotations

from typing import Any

from bastion.api.app_context import Context
from bastion.api.convert import from_units, trim
from bastion.api.errors import ApiError
from bastion.api.http import now_ms
from bastion.api.native import schemas as S
from bastion.api.native import views as V
from bastion.api.service.outcomes import MarginChanged
from bastion.core import errors as X
from bastion.core.engine import Engine
from bastion.core.perp.calc import PPM, initial, maintenance, notional
from bastion.core.perp.funding import rate_e9
from bastion.core.perp.state import MarginAccount, PerpMarket, Position
from bastion.core.state import Market

RATE_DP = 9  # RATE_SCALE = 10**9


def _now() -> int:
    return now_ms()


def signed(text: str, negative: bool) -> str:
    return "-" + text if negative and text.strip("0.") else text


def amount(value: int, dp: int) -> str:
    return signed(from_units(abs(value), dp), value < 0)


def perp_record(engine: Engine, market: str) -> PerpMarket:
    pm = engine.perp.markets.get(market)
    if pm is None:
        raise ApiError(X.NOT_PERP, f"{market} is not a perpetual market")
    return pm


def entry_price(pos: Position, pm: PerpMarket) -> int:
    """Average entry: |cost| x price_div / |size| (price units, rounded down)."""
    size = abs(pos.size)
    return abs(pos.cost) * pm.price_div // size if size else 0


def _position_numbers(engine: Engine, pos: Position) -> dict[str, int]:
    pm = engine.perp.markets[pos.market]
    ma = engine.perp.margins.get((pos.account, pm.settle))
    lev = engine.perp.leverage(ma, pm)
    n = notional(pos.size, pm.mark, pm.price_div)
    return {
        "entry": entry_price(pos, pm), "mark": pm.mark, "index": pm.index,
        "notional": n, "upnl": pos.size * pm.mark // pm.price_div - pos.cost,
        "initial": initial(pm.tiers, n, lev), "maintenance": maintenance(pm.tiers, n),
        "leverage": lev,
    }


def liquidation_price(engine: Engine, pos: Position) -> int:
    """The mark at which this position's account reaches maintenance margin, other positions
    held at their current marks (cross margin), or 0 if no positive price gets there.

    With size s, cost c, price divisor d and the tier's (mmr, cum) in ppm, equality of margin
    balance and maintenance gives ``P = d * (1e6 * K + cum) / (|s| * mmr - 1e6 * s)``, where
    ``K`` is collateral + other positions' PnL - c - their maintenance. The tier is the one
    whose notional range holds ``|s| * P / d``. Rounded toward the position's safe side."""
    pe = engine.perp
    pm = pe.markets[pos.market]
    ma = pe.margins.get((pos.account, pm.settle))
    if ma is None or pos.size == 0:
        return 0
    r = pe.risk(ma)
    mine = _position_numbers(engine, pos)
    k = r.equity - mine["upnl"] - pos.cost - (r.maintenance - mine["maintenance"])
    size, div = pos.size, pm.price_div
    held = abs(size)
    floor = 0
    for tier in pm.tiers:
        den = held * tier.mmr_ppm - PPM * size
        num = div * (PPM * k + tier.cum_ppm)
        if den == 0:
            return 0
        price = -(-num // den) if size > 0 else num // den
        if price <= 0:
            return 0
        value = held * price // div
        first, last = tier is pm.tiers[0], tier is pm.tiers[-1]
        if (value > floor or first) and (value <= tier.max_notional or last):
            return price
        floor = tier.max_notional
    return 0


def open_positions(engine: Engine, account: int,
                   markets: list[str] | None = None) -> list[Position]:
    out = []
    for name, book in sorted(engine.perp.positions.items()):
        if markets is not None and name not in markets:
            continue
        pos = book.get(account)
        if pos is not None and pos.size != 0:
            out.append(pos)
    return out


# ---------------------------------------------------------------- native views

def positions(ctx: Context, account: int, markets: list[str] | None = None
              ) -> list[S.Position]:
    """The account's open positions (only in ``markets`` if given)."""
    e = ctx.gateway.engine
    out = []
    for pos in open_positions(e, account, markets):
        mkt = e.markets[pos.market]
        u = V.Units(e, mkt)
        k = _position_numbers(e, pos)
        out.append(S.Position(
            market=pos.market, side="long" if pos.size > 0 else "short",
            size=amount(pos.size, u.base_dp), entry_price=u.price(k["entry"]),
            mark_price=u.price(k["mark"]) if k["mark"] else None,
            index_price=u.price(k["index"]) if k["index"] else None,
            notional=u.quote_amount(k["notional"]),
            unrealized_pnl=amount(k["upnl"], u.quote_dp),
            realized_pnl=amount(pos.realized_pnl, u.quote_dp),
            funding_paid=amount(pos.funding_paid, u.quote_dp), leverage=k["leverage"],
            initial_margin=u.quote_amount(k["initial"]),
            maintenance_margin=u.quote_amount(k["maintenance"]), settle_asset=u.quote))
    return out


def margin_account(engine: Engine, ma: MarginAccount) -> S.MarginAccount:
    """One cross-margin account (one settle asset) as it stands."""
    pe = engine.perp
    dp = engine.assets[ma.asset].decimals
    r = pe.risk(ma)
    return S.MarginAccount(
        asset=ma.asset, collateral=amount(r.wallet, dp), equity=amount(r.equity, dp),
        unrealized_pnl=amount(r.upnl, dp), initial_margin=from_units(r.initial, dp),
        maintenance_margin=from_units(r.maintenance, dp),
        order_margin=from_units(ma.order_im, dp),
        available=amount(r.equity - r.initial - ma.order_im, dp),
        leverage=dict(sorted(ma.leverage.items())))


def margins(ctx: Context, account: int) -> list[S.MarginAccount]:
    e = ctx.gateway.engine
    return [margin_account(e, ma) for (acct, _), ma in sorted(e.perp.margins.items())
            if acct == account]


def _changed_account(out: MarginChanged) -> MarginAccount:
    """The account a margin command left (a transfer or leverage change that succeeded always
    leaves one; an empty one is what "none" would read as)."""
    return out.margin if out.margin is not None else MarginAccount(out.account, out.asset)


def margin_changed(ctx: Context, out: MarginChanged) -> S.MarginAccount:
    """``POST /v1/margin``: the one cross-margin account the transfer changed."""
    return margin_account(ctx.gateway.engine, _changed_account(out))


def leverage_set(ctx: Context, market: str, out: MarginChanged) -> S.LeverageSet:
    """``POST /v1/leverage``: the market's leverage now in force, the account's position in
    that market (None when flat) and the settle asset's cross-margin account."""
    pos = positions(ctx, out.account, [market])
    return S.LeverageSet(market=market, leverage=out.leverage,
                         position=pos[0] if pos else None,
                         margin=margin_account(ctx.gateway.engine, _changed_account(out)))


def funding(ctx: Context, market: Market) -> S.Funding:
    e = ctx.gateway.engine
    pm = perp_record(e, market.market)
    u = V.Units(e, market)
    return S.Funding(
        market=market.market, mark_price=u.price(pm.mark) if pm.mark else None,
        index_price=u.price(pm.index) if pm.index else None,
        index_ts=pm.index_ts, funding_rate=amount(rate_e9(pm), RATE_DP),
        last_funding_rate=amount(pm.funding_rate_e9, RATE_DP),
        interval_ms=pm.funding_interval_ms,
        next_funding_ts=pm.last_funding_ts + pm.funding_interval_ms,
        open_interest=u.qty(pm.open_interest), armed=pm.armed)


# ---------------------------------------------------------------- Binance (/fapi) shapes

def _bsym(m: Market) -> str:
    return m.base + m.quote


def binance_account(ctx: Context, account: int) -> dict[str, Any]:
    e = ctx.gateway.engine
    pe = e.perp
    now = _now()
    assets = []
    totals = {"wallet": 0, "upnl": 0, "margin": 0, "initial": 0, "maint": 0, "avail": 0,
              "order": 0}
    dp_total = 8
    for (acct, asset), ma in sorted(pe.margins.items()):
        if acct != account:
            continue
        dp = dp_total = e.assets[asset].decimals
        r = pe.risk(ma)
        avail = r.equity - r.initial - ma.order_im
        assets.append({
            "asset": asset, "walletBalance": amount(r.wallet, dp),
            "unrealizedProfit": amount(r.upnl, dp), "marginBalance": amount(r.equity, dp),
            "maintMargin": from_units(r.maintenance, dp),
            "initialMargin": from_units(r.initial + ma.order_im, dp),
            "positionInitialMargin": from_units(r.initial, dp),
            "openOrderInitialMargin": from_units(ma.order_im, dp),
            "crossWalletBalance": amount(r.wallet, dp),
            "crossUnPnl": amount(r.upnl, dp), "availableBalance": amount(avail, dp),
            "maxWithdrawAmount": amount(max(avail, 0), dp), "updateTime": now})
        for key, v in (("wallet", r.wallet), ("upnl", r.upnl), ("margin", r.equity),
                       ("initial", r.initial + ma.order_im), ("maint", r.maintenance),
                       ("avail", avail), ("order", ma.order_im)):
            totals[key] += v
    return {
        "totalInitialMargin": amount(totals["initial"], dp_total),
        "totalMaintMargin": amount(totals["maint"], dp_total),
        "totalWalletBalance": amount(totals["wallet"], dp_total),
        "totalUnrealizedProfit": amount(totals["upnl"], dp_total),
        "totalMarginBalance": amount(totals["margin"], dp_total),
        "totalPositionInitialMargin": amount(totals["initial"] - totals["order"], dp_total),
        "totalOpenOrderInitialMargin": amount(totals["order"], dp_total),
        "totalCrossWalletBalance": amount(totals["wallet"], dp_total),
        "totalCrossUnPnl": amount(totals["upnl"], dp_total),
        "availableBalance": amount(totals["avail"], dp_total),
        "maxWithdrawAmount": amount(max(totals["avail"], 0), dp_total),
        "assets": assets,
        "positions": [binance_position_row(e, p) for p in open_positions(e, account)],
        "updateTime": now}


def binance_balances(ctx: Context, account: int) -> list[dict[str, Any]]:
    """``/fapi/v2|v3/balance`` rows: the account's margin assets with Binance's ``balance``
    (wallet balance) and the fields clients read next to it."""
    acct = binance_account(ctx, account)
    return [{"accountAlias": "", "asset": a["asset"], "balance": a["walletBalance"],
             "crossWalletBalance": a["crossWalletBalance"], "crossUnPnl": a["crossUnPnl"],
             "availableBalance": a["availableBalance"],
             "maxWithdrawAmount": a["maxWithdrawAmount"], "marginAvailable": True,
             "updateTime": a["updateTime"]} | a for a in acct["assets"]]


def binance_position_row(e: Engine, pos: Position) -> dict[str, Any]:
    mkt = e.markets[pos.market]
    u = V.Units(e, mkt)
    k = _position_numbers(e, pos)
    sign = pos.size < 0
    return {
        "symbol": _bsym(mkt), "positionSide": "BOTH", "positionAmt": amount(pos.size, u.base_dp),
        "entryPrice": u.price(k["entry"]), "breakEvenPrice": u.price(k["entry"]),
        "markPrice": u.price(k["mark"]), "unRealizedProfit": amount(k["upnl"], u.quote_dp),
        "liquidationPrice": u.price(liquidation_price(e, pos)), "isolatedMargin": "0",
        "notional": signed(u.quote_amount(k["notional"]), sign), "marginAsset": u.quote,
        "isolatedWallet": "0", "initialMargin": u.quote_amount(k["initial"]),
        "maintMargin": u.quote_amount(k["maintenance"]),
        "positionInitialMargin": u.quote_amount(k["initial"]), "openOrderInitialMargin": "0",
        "leverage": str(k["leverage"]), "marginType": "cross", "adl": 0,
        "bidNotional": "0", "askNotional": "0", "updateTime": _now()}


def binance_positions(ctx: Context, account: int, markets: list[Market]) -> list[dict[str, Any]]:
    e = ctx.gateway.engine
    return [binance_position_row(e, p)
            for p in open_positions(e, account, [m.market for m in markets])]


def binance_premium(ctx: Context, m: Market) -> dict[str, Any]:
    e = ctx.gateway.engine
    pm = perp_record(e, m.market)
    u = V.Units(e, m)
    return {"symbol": _bsym(m), "markPrice": u.price(pm.mark), "indexPrice": u.price(pm.index),
            "estimatedSettlePrice": u.price(pm.index),
            "lastFundingRate": trim(amount(rate_e9(pm), RATE_DP)),
            "interestRate": trim(amount(pm.interest_e9, RATE_DP)),
            "nextFundingTime": pm.last_funding_ts + pm.funding_interval_ms,
            "fundingIntervalHours": pm.funding_interval_ms // 3_600_000, "time": _now()}


def binance_funding_history(ctx: Context, markets: list[Market], limit: int
                            ) -> list[dict[str, Any]]:
    e = ctx.gateway.engine
    rm = ctx.gateway.readmodel
    out: list[dict[str, Any]] = []
    for m in markets:
        u = V.Units(e, m)
        for ev in list(rm.funding.get(m.market, ()))[-limit:]:
            if ev.paused:
                continue
            out.append({"symbol": _bsym(m), "fundingTime": ev.ts,
                        "fundingRate": trim(amount(ev.rate_e9, RATE_DP)),
                        "markPrice": u.price(e.perp.markets[m.market].mark)})
    out.sort(key=lambda r: r["fundingTime"])
    return out[-limit:]


def binance_brackets(ctx: Context, markets: list[Market]) -> list[dict[str, Any]]:
    e = ctx.gateway.engine
    out = []
    for m in markets:
        pm = perp_record(e, m.market)
        dp = e.assets[pm.settle].decimals
        floor = 0
        brackets = []
        for i, t in enumerate(pm.tiers, 1):
            cap = min(t.max_notional, 10**18)
            brackets.append({"bracket": i, "initialLeverage": t.max_leverage,
                             "notionalCap": int(from_units(cap, dp).split(".")[0]),
                             "notionalFloor": int(from_units(floor, dp).split(".")[0]),
                             "maintMarginRatio": float(from_units(t.mmr_ppm, 6)),
                             "cum": float(from_units(t.cum_ppm // 10**6, dp))})
            floor = t.max_notional
        out.append({"symbol": _bsym(m), "brackets": brackets})
    return out


async def binance_set_leverage(ctx: Context, account: int, m: Market, leverage: int
                               ) -> dict[str, Any]:
    """Set leverage; asking for the leverage already in force answers the current setting
    (bots re-send it on every start and treat an error as fatal)."""
    out = await ctx.gateway.set_leverage(account, m.market, leverage, same_is_ok=True)
    pm = perp_record(ctx.gateway.engine, m.market)
    cap = max((t.max_notional for t in pm.tiers if t.max_leverage >= out.leverage), default=0)
    dp = ctx.gateway.engine.assets[out.asset].decimals
    return {"symbol": _bsym(m), "leverage": out.leverage,
            "maxNotionalValue": trim(from_units(min(cap, 10**18), dp)) if cap else "0"}
