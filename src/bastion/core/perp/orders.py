"""Perp order entry and matching: same book, ids and events as spot, margin instead of assets.

An order reserves initial margin (notional / leverage + worst fee) instead of quote or base; a
fill moves positions, not assets. Reduce-only orders reserve nothing and are clipped at every
fill to what is left of the position they reduce, so they can never open or grow one, whatever
happened to the position since they were placed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.book import OrderBook
from bastion.core.commands import Side
from bastion.core.engine import BPS, Refused, fee_amount
from bastion.core.matching import STOP
from bastion.core.matching import execute as shared_execute
from bastion.core.matching import match as shared_match
from bastion.core.perp.calc import ceil_div, order_hold
from bastion.core.state import Market, Order

if TYPE_CHECKING:
    from bastion.core.perp.engine import PerpEngine
    from bastion.core.perp.state import PerpMarket

LIQUIDATION = "liquidation"


def place_cmd(pe: PerpEngine, cmd: C.PlaceOrder, out: list[E.Event]) -> None:
    place(pe, out, cmd)


def reducible(pe: PerpEngine, account: int, pm: PerpMarket, is_buy: bool) -> int:
    """How much an order on this side may still reduce the account's position."""
    pos = pe.positions.get(pm.market, {}).get(account)
    if pos is None or (pos.size < 0) != is_buy:
        return 0
    return abs(pos.size)


def _band(pm: PerpMarket, mkt: Market, is_buy: bool) -> int:
    """The furthest price an order may have from the mark (the perp price band)."""
    tick = mkt.tick_size
    if is_buy:
        return pm.mark * (BPS + pm.price_band_bps) // BPS // tick * tick
    return max(tick, ceil_div(pm.mark * (BPS - pm.price_band_bps), BPS * tick) * tick)


def place(pe: PerpEngine, out: list[E.Event], cmd: C.PlaceOrder) -> Order:
    """Validate (raising ``Refused`` before any change), accept, match, rest or expire."""
    eng = pe.eng
    mkt, pm = pe.perp_market(cmd.market)
    reduce_only = cmd.reduce_only
    if type(reduce_only) is not bool:
        raise Refused(X.INVALID_ARGUMENT, "reduce_only must be a boolean")
    if not pm.mark:
        raise Refused(X.NO_MARK_PRICE, f"{mkt.market} has no mark price yet")
    is_buy = cmd.side == "buy"
    acct, is_buy, q, p, tif, book, best, crosses = eng.order_terms(
        mkt, cmd, band_limit=_band(pm, mkt, is_buy), min_notional=not reduce_only)
    side, post_only, client_id, stp = cmd.side, cmd.post_only, cmd.client_id, cmd.stp
    ma = pe.margins.get((acct.account, pm.settle))
    if reduce_only:
        can = reducible(pe, acct.account, pm, is_buy)
        if not can:
            raise Refused(X.REDUCE_ONLY, f"reduce-only {side} has no opposite position to "
                                         f"reduce in {mkt.market}")
        q = min(q, can)
        hold = 0
    else:
        hold = order_hold(p * q // mkt.price_div, pe.leverage(ma, pm), mkt.taker_fee_ppm)
        free = pe.available(ma)
        if hold > free:
            raise Refused(X.INSUFFICIENT_MARGIN, f"order needs {hold} {pm.settle} of margin, "
                                                 f"available {free}")
    stp_mode = stp if stp is not None else acct.stp
    if tif == "FOK":
        eng.check_fok(book, is_buy, p, q, acct.account, stp_mode, crosses)
    # ---- accepted: from here on state changes
    oid = eng.next_order_id
    eng.next_order_id = oid + 1
    order = Order(order_id=oid, account=acct.account, market=mkt.market, side=side, price=p,
                  qty=q, remaining=q, hold=hold, ts=eng.ts, tif=str(tif), post_only=post_only,
                  client_id=client_id, stp=stp,
                  maker_cap=mkt.maker_fee_ppm, taker_cap=mkt.taker_fee_ppm)
    if hold:
        pe.margin(acct.account, pm.settle).order_im += hold
    eng.orders[oid] = order
    pe.opened(order, pm.settle)
    if client_id:
        eng.client_ids[(acct.account, client_id)] = oid
    if reduce_only:
        pe.reduce_only.add(oid)
    out.append(E.OrderAccepted(seq=eng.seq, ts=eng.ts, order_id=oid, account=acct.account,
                               market=mkt.market, side=side, price=p, qty=q,
                               order_type=cmd.order_type, tif=tif, post_only=post_only,
                               client_id=client_id, reduce_only=reduce_only))
    execute(pe, mkt, pm, book, order, stp_mode, crosses, out)
    return order


def liquidation_order(pe: PerpEngine, mkt: Market, pm: PerpMarket, account: int, is_buy: bool,
                      qty: int, limit: int, out: list[E.Event]) -> Order:
    """An IOC reduce-only order of the liquidation engine; fee is charged by the caller."""
    eng = pe.eng
    oid = eng.next_order_id
    eng.next_order_id = oid + 1
    side: Side = "buy" if is_buy else "sell"
    order = Order(order_id=oid, account=account, market=mkt.market, side=side, price=limit,
                  qty=qty, remaining=qty, hold=0, ts=eng.ts, tif="IOC",
                  client_id="", stp="expire_maker")
    eng.orders[oid] = order
    pe.opened(order, pm.settle)
    pe.reduce_only.add(oid)
    out.append(E.OrderAccepted(seq=eng.seq, ts=eng.ts, order_id=oid, account=account,
                               market=mkt.market, side=side, price=limit, qty=qty,
                               order_type=LIQUIDATION, tif="IOC", reduce_only=True))
    book = eng.books[mkt.market]
    best = (book.asks if is_buy else book.bids).best()
    crosses = best is not None and (best <= limit if is_buy else best >= limit)
    execute(pe, mkt, pm, book, order, "expire_maker", crosses, out, liquidation=True)
    return order


def _forget(pe: PerpEngine, order: Order) -> None:
    pe.release(order)
    pe.eng._forget(order)


def execute(pe: PerpEngine, mkt: Market, pm: PerpMarket, book: OrderBook, order: Order,
            stp_mode: str, crosses: bool, out: list[E.Event], liquidation: bool = False) -> None:
    """The shared match-then-rest step with perp settlement and reduce-only clipping."""
    eng = pe.eng
    ro = pe.reduce_only
    taker_ro = order.order_id in ro
    opposite = book.asks if order.side == "buy" else book.bids

    def settle(m: Market, maker: Order, taker: Order, price: int, qty: int,
               o: list[E.Event]) -> None:
        fill(pe, m, pm, maker, taker, price, qty, o, liquidation)

    def clip(maker: Order, taker: Order, qty: int, o: list[E.Event]) -> int:
        """Reduce-only orders never open or grow a position, whatever changed since."""
        if taker_ro:
            can = reducible(pe, taker.account, pm, taker.side == "buy")
            if can == 0:
                eng._close_order(taker, mkt, None, X.REDUCE_ONLY, o)
                return STOP
            qty = min(qty, can)
        if maker.order_id in ro:
            can = reducible(pe, maker.account, pm, maker.side == "buy")
            if can < maker.remaining:
                if can == 0:
                    eng._close_order(maker, mkt, opposite, X.REDUCE_ONLY, o)
                    return 0
                cut = maker.remaining - can
                maker.remaining = can
                maker.qty -= cut
                opposite.levels[maker.price].qty -= cut
                o.append(E.OrderAmended(seq=eng.seq, ts=eng.ts, order_id=maker.order_id,
                                        account=maker.account, market=mkt.market,
                                        price=maker.price, qty=maker.qty, remaining=can,
                                        kept_priority=True))
                qty = min(qty, can)
        return qty

    def forget(o: Order) -> None:
        _forget(pe, o)

    shared_execute(mkt, book, order, crosses, out,
                   lambda: shared_match(mkt, book, order, stp_mode, out, settle,
                                        eng._close_order, forget, clip),
                   eng._close_order, forget, eng.orders.__contains__)


def _shrink_hold(pe: PerpEngine, pm: PerpMarket, order: Order, before: int) -> None:
    """Holds shrink in proportion to the remaining quantity (zero when fully filled)."""
    if order.hold:
        keep = order.hold * order.remaining // before
        pe.margins[(order.account, pm.settle)].order_im -= order.hold - keep
        order.hold = keep


def fill(pe: PerpEngine, mkt: Market, pm: PerpMarket, maker: Order, taker: Order, price: int,
         qty: int, out: list[E.Event], liquidation: bool = False) -> None:
    eng = pe.eng
    amount = price * qty // mkt.price_div
    taker_fee = 0 if liquidation else fee_amount(amount, mkt.taker_fee_ppm)
    maker_rate = mkt.maker_fee_ppm
    if maker_rate > maker.maker_cap >= 0:
        maker_rate = maker.maker_cap
    maker_fee = fee_amount(amount, maker_rate)
    if taker.side == "buy":
        pe.trade(pm, taker.account, maker.account, qty, amount)
    else:
        pe.trade(pm, maker.account, taker.account, qty, amount)
    settle = pm.settle
    margins = pe.margins
    margins[(taker.account, settle)].collateral -= taker_fee
    margins[(maker.account, settle)].collateral -= maker_fee
    eng.fees[settle] = eng.fees.get(settle, 0) + taker_fee + maker_fee
    for order in (maker, taker):
        before = order.remaining
        order.remaining = before - qty
        _shrink_hold(pe, pm, order, before)
        order.filled_quote += amount
    mkt.last_price = price
    tid = eng.next_trade_id
    eng.next_trade_id = tid + 1
    out.append(E.Trade(seq=eng.seq, ts=eng.ts, trade_id=tid, market=mkt.market, price=price,
                       qty=qty, taker_side=taker.side, maker_order=maker.order_id,
                       taker_order=taker.order_id, maker_account=maker.account,
                       taker_account=taker.account, maker_fee=maker_fee, taker_fee=taker_fee,
                       maker_remaining=maker.remaining, taker_remaining=taker.remaining))


def amend(pe: PerpEngine, cmd: C.AmendOrder, out: list[E.Event]) -> None:
    """Same rules as spot amend; a re-priced or grown order is re-margined and re-matched."""
    eng = pe.eng
    mkt, pm = pe.perp_market(cmd.market)
    order, new_price, new_qty, shrink = eng.amend_terms(mkt, cmd)
    is_buy = order.side == "buy"
    filled = order.qty - order.remaining
    side = eng.books[mkt.market].side(is_buy)
    new_remaining = new_qty - filled
    if shrink:
        before = order.remaining
        side.levels[order.price].qty -= before - new_remaining
        order.remaining = new_remaining
        order.qty = new_qty
        _shrink_hold(pe, pm, order, before)
        out.append(E.OrderAmended(seq=eng.seq, ts=eng.ts, order_id=order.order_id,
                                  account=order.account, market=mkt.market, price=order.price,
                                  qty=new_qty, remaining=new_remaining, kept_priority=True))
        return
    band_limit = _band(pm, mkt, is_buy)
    if (new_price > band_limit) if is_buy else (new_price < band_limit):
        raise Refused(X.PRICE_BAND, f"amended price {new_price} is outside the price band "
                                    f"around mark {pm.mark}")
    book = eng.books[mkt.market]
    crosses = eng.reprice_crosses(mkt, order, new_price)
    ma = pe.margins.get((order.account, pm.settle))
    if order.order_id in pe.reduce_only:
        new_hold = 0
    else:
        new_hold = order_hold(new_price * new_remaining // mkt.price_div, pe.leverage(ma, pm),
                              mkt.taker_fee_ppm)
        free = pe.available(ma) + order.hold
        if new_hold > free:
            raise Refused(X.INSUFFICIENT_MARGIN, f"amended order needs {new_hold} {pm.settle} "
                                                 f"of margin, available {free}")
    side.remove(order)
    if ma is not None:
        ma.order_im += new_hold - order.hold
    # a fresh record: the old one may still sit, dead, in its level's deque
    order = msgspec.structs.replace(order, hold=new_hold, price=new_price, qty=new_qty,
                                    remaining=new_remaining, ts=eng.ts, live=True,
                                    maker_cap=mkt.maker_fee_ppm, taker_cap=mkt.taker_fee_ppm)
    eng.orders[order.order_id] = order
    out.append(E.OrderAmended(seq=eng.seq, ts=eng.ts, order_id=order.order_id,
                              account=order.account, market=mkt.market, price=new_price,
                              qty=new_qty, remaining=new_remaining, kept_priority=False))
    stp_mode = order.stp if order.stp is not None else eng.accounts[order.account].stp
    execute(pe, mkt, pm, book, order, stp_mode, crosses, out)
