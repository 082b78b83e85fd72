"""Asset and market commands: create, update metadata, reference price, market modes, and the
timed end of ``recovery``."""

from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.book import OrderBook
from bastion.core.instruments import validate_market
from bastion.core.modes import MODES
from bastion.core.rules import Refused, int_in
from bastion.core.state import Asset, Market
from bastion.core.venue import Venue

#: the metadata ``UpdateMarket`` may change
UPDATABLE = ("tick_size", "lot_size", "min_qty", "max_qty", "min_notional", "maker_fee_ppm",
             "taker_fee_ppm", "market_band_bps", "ref_band_bps")


def create_asset(v: Venue, cmd: C.CreateAsset, out: list[E.Event]) -> None:
    if not isinstance(cmd.asset, str) or not 1 <= len(cmd.asset) <= 16 \
            or not cmd.asset.isalnum():
        raise Refused(X.INVALID_ARGUMENT, "asset must be 1-16 letters or digits")
    if not int_in(cmd.decimals, 0, 18):
        raise Refused(X.INVALID_ARGUMENT, "decimals must be an integer in 0..18")
    if cmd.asset in v.assets:
        raise Refused(X.ASSET_EXISTS, f"asset {cmd.asset} exists")
    v.assets[cmd.asset] = Asset(asset=cmd.asset, decimals=cmd.decimals)
    out.append(E.AssetCreated(seq=v.seq, ts=v.ts, asset=cmd.asset, decimals=cmd.decimals))


def create_market(v: Venue, cmd: C.CreateMarket, out: list[E.Event]) -> None:
    if isinstance(cmd.market, str) and cmd.market in v.markets:
        raise Refused(X.MARKET_EXISTS, f"market {cmd.market} exists")
    base = v.asset(cmd.base)
    quote = v.asset(cmd.quote)
    problem = validate_market(cmd, base.decimals, quote.decimals)
    if problem:
        raise Refused(X.INVALID_MARKET_SPEC, problem)
    mkt = Market(market=cmd.market, base=cmd.base, quote=cmd.quote,
                 price_decimals=cmd.price_decimals,
                 price_div=10 ** (cmd.price_decimals + base.decimals - quote.decimals),
                 tick_size=cmd.tick_size, lot_size=cmd.lot_size, min_qty=cmd.min_qty,
                 max_qty=cmd.max_qty, min_notional=cmd.min_notional,
                 maker_fee_ppm=cmd.maker_fee_ppm, taker_fee_ppm=cmd.taker_fee_ppm,
                 market_band_bps=cmd.market_band_bps, ref_band_bps=cmd.ref_band_bps)
    v.markets[mkt.market] = mkt
    v.books[mkt.market] = OrderBook(mkt.market)
    out.append(E.MarketCreated(seq=v.seq, ts=v.ts, market=mkt.market, reason=cmd.reason))


def update_market(v: Venue, cmd: C.UpdateMarket, out: list[E.Event]) -> None:
    mkt = v.market(cmd.market)
    changes: dict[str, int] = {}
    for name in UPDATABLE:
        value = getattr(cmd, name)
        if value is not None and value != getattr(mkt, name):
            changes[name] = value
    if not changes:
        raise Refused(X.NO_CHANGE, "update changes nothing")
    merged = mkt.copy()
    for name, value in changes.items():
        setattr(merged, name, value)
    spec = C.CreateMarket(market=mkt.market, base=mkt.base, quote=mkt.quote,
                          price_decimals=mkt.price_decimals, tick_size=merged.tick_size,
                          lot_size=merged.lot_size, min_qty=merged.min_qty,
                          max_qty=merged.max_qty, min_notional=merged.min_notional,
                          maker_fee_ppm=merged.maker_fee_ppm,
                          taker_fee_ppm=merged.taker_fee_ppm,
                          market_band_bps=merged.market_band_bps,
                          ref_band_bps=merged.ref_band_bps)
    problem = validate_market(spec, v.assets[mkt.base].decimals, v.assets[mkt.quote].decimals)
    if problem:
        raise Refused(X.INVALID_MARKET_SPEC, problem)
    for name, value in changes.items():
        setattr(mkt, name, value)
    out.append(E.MarketUpdated(seq=v.seq, ts=v.ts, market=mkt.market, changes=changes,
                               reason=cmd.reason if isinstance(cmd.reason, str) else ""))


def set_ref_price(v: Venue, cmd: C.SetReferencePrice, out: list[E.Event]) -> None:
    mkt = v.market(cmd.market)
    if not int_in(cmd.price, 1, X.MAX_INT):
        raise Refused(X.INVALID_PRICE, f"reference price must be a positive integer, "
                                       f"got {cmd.price!r}")
    mkt.ref_price = cmd.price
    out.append(E.ReferencePriceSet(seq=v.seq, ts=v.ts, market=mkt.market, price=cmd.price))


def set_mode(v: Venue, cmd: C.SetMarketMode, out: list[E.Event]) -> None:
    mkt = v.market(cmd.market)
    mode = cmd.mode
    if mode not in MODES:
        raise Refused(X.INVALID_ARGUMENT, f"unknown market mode {mode!r}; one of "
                                          f"{', '.join(MODES)}")
    if not isinstance(cmd.reason, str) or not cmd.reason.strip():
        raise Refused(X.INVALID_ARGUMENT, "a mode change needs a reason")
    until = cmd.until_ts
    if mode == "recovery":
        if not int_in(until, v.ts + 1, X.MAX_INT):
            raise Refused(X.INVALID_ARGUMENT, "recovery needs until_ts after the command's "
                                              "timestamp")
    elif until:
        raise Refused(X.INVALID_ARGUMENT, "until_ts applies only to recovery")
    if mode == mkt.mode and until == mkt.mode_until:
        raise Refused(X.NO_CHANGE, f"market {mkt.market} is already {mode}")
    out.append(E.ModeChanged(seq=v.seq, ts=v.ts, market=mkt.market, old=mkt.mode,
                             new=mode, reason=cmd.reason, until_ts=until))
    if mode == "closed":
        book = v.books[mkt.market]
        for order in sorted((o for o in v.orders.values() if o.market == mkt.market),
                            key=lambda o: o.order_id):
            v.close_order(order, mkt, book.side(order.side == "buy"), "MARKET_CLOSED", out)
    mkt.mode = mode
    mkt.mode_reason = cmd.reason
    mkt.mode_until = until
    v.recompute_deadline()
    v.ledgers[mkt.kind].mode_changed(mkt, out)


def end_recovery(v: Venue, out: list[E.Event]) -> None:
    """Timed return to ``open``: happens on the first command stamped past the deadline."""
    for mkt in sorted(v.markets.values(), key=lambda m: m.market):
        if mkt.mode == "recovery" and mkt.mode_until <= v.ts:
            out.append(E.ModeChanged(seq=v.seq, ts=v.ts, market=mkt.market,
                                     old="recovery", new="open",
                                     reason="recovery protection period ended"))
            mkt.mode = "open"
            mkt.mode_reason = "recovery protection period ended"
            mkt.mode_until = 0
    v.recompute_deadline()
