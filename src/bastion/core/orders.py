"""The one order lifecycle, for every market kind: entry, amend, cancel, matching, fills, fees,
the id and client-id indexes and the ``OrderAccepted``/``Trade`` events.

Money is the market's ledger's job (``ledger.base.Ledger``): order entry validates everything
first (shared terms here, the hold there), then reserves; each fill is priced and charged here
and settled there. Nothing in this module knows whether a market is spot or perpetual.
"""

from typing import Any, Final

from msgspec.structs import astuple

from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.book import BookSide, OrderBook
from bastion.core.commands import Side, STPMode
from bastion.core.ledger.base import Ledger
from bastion.core.matching import match
from bastion.core.modes import accepts_cancel, accepts_order
from bastion.core.records import Order
from bastion.core.rules import (
    BPS,
    MAX_CLIENT_ID,
    STP_MODES,
    GuardViolation,
    Refused,
    check_ref_band,
    fee_amount,
    maker_rate,
    valid_price,
    valid_qty,
)
from bastion.core.state import Account, Market
from bastion.core.venue import Venue

#: (account, is_buy, qty, price, tif, book, best opposite, crosses, side, post_only,
#: client_id, stp, order_type): everything order entry needs from the command, read once
Terms = tuple[Account, bool, int, int, str, OrderBook, int | None, bool, Side, bool, str,
              STPMode | None, str]

#: A command's fields as one tuple (``msgspec.structs.astuple``). The two hot commands are read
#: that way: one C call instead of a generic attribute read per field (order entry read 13).
Fields = tuple[Any, ...]
#: ``errors.MAX_INT`` (2**62) is one past the ints compiled code compares natively: the inline
#: price check stops below it and leaves the rest to ``valid_price``
MAX_SHORT: Final = X.MAX_INT - 1
fields_of: Final = astuple
#: the hot events, bound here (``Final``): compiled code then calls them without a module
#: attribute lookup each time (``events`` is a plain Python module)
OrderAccepted: Final = E.OrderAccepted
Trade: Final = E.Trade
_PLACE = C.PlaceOrder.__struct_fields__
P_ACCOUNT: Final = _PLACE.index("account")
P_MARKET: Final = _PLACE.index("market")
P_SIDE: Final = _PLACE.index("side")
P_QTY: Final = _PLACE.index("qty")
P_PRICE: Final = _PLACE.index("price")
P_ORDER_TYPE: Final = _PLACE.index("order_type")
P_TIF: Final = _PLACE.index("tif")
P_POST_ONLY: Final = _PLACE.index("post_only")
P_CLIENT_ID: Final = _PLACE.index("client_id")
P_STP: Final = _PLACE.index("stp")
P_REDUCE_ONLY: Final = _PLACE.index("reduce_only")
P_SEQ: Final = _PLACE.index("seq")
P_TS: Final = _PLACE.index("ts")
_CANCEL = C.CancelOrder.__struct_fields__
K_ACCOUNT: Final = _CANCEL.index("account")
K_MARKET: Final = _CANCEL.index("market")
K_ORDER_ID: Final = _CANCEL.index("order_id")
K_CLIENT_ID: Final = _CANCEL.index("client_id")
K_SEQ: Final = _CANCEL.index("seq")
K_TS: Final = _CANCEL.index("ts")


# ---------------------------------------------------------------------- handlers

def place_order(v: Venue, cmd: C.PlaceOrder, out: list[E.Event]) -> Order:
    """Validate (no mutation until every check passed), reserve, match, rest or expire."""
    return place_fields(v, cmd, fields_of(cmd), out)


def place_fields(v: Venue, cmd: C.PlaceOrder, f: Fields, out: list[E.Event]) -> Order:
    """``place_order`` with the command's fields already read (``f``, by the ``P_*``
    positions). Values are read unchecked until validated (see ``terms``); the event
    reuses the command's own field objects where the order keeps them, so they are not boxed
    again."""
    market = f[P_MARKET]
    mkt = v.markets.get(market) if type(market) is str else None
    if mkt is None:
        raise Refused(X.UNKNOWN_MARKET, f"unknown market {market!r}")
    led = v.ledgers[mkt.kind]
    band_limit, min_notional = (led.entry(mkt, f[P_SIDE], f[P_REDUCE_ONLY])
                                if led.has_entry_checks else (0, True))
    (acct, is_buy, qty, price, tif, book, _, crosses, side, post_only, client_id, stp,
     order_type) = terms(v, mkt, f, band_limit, min_notional)
    reduce_only = f[P_REDUCE_ONLY] is True
    held_qty, hold = led.reserve_terms(acct, mkt, is_buy, qty, price, order_type == "market",
                                       reduce_only)
    account = acct.account
    stp_mode = stp if stp is not None else acct.stp
    if tif == "FOK":
        check_fok(book, is_buy, price, held_qty, account, stp_mode, crosses)
    # ---- accepted: from here on state changes
    oid = v.next_order_id
    v.next_order_id = oid + 1
    ts = v.ts
    order = Order(oid, account, market, side, price, held_qty, held_qty, hold, ts, tif,
                  post_only, client_id, stp, mkt.maker_fee_ppm, mkt.taker_fee_ppm, 0, True, acct)
    reduce_only = led.reserve(mkt, order, reduce_only)
    key: Any = oid  # boxed once, for the index and the event
    v.orders[key] = order
    if client_id:
        ids = v.client_ids.get(account)
        if ids is None:
            ids = v.client_ids[account] = {}
        ids[client_id] = oid
    qty_box: Any = f[P_QTY] if held_qty == qty else held_qty
    price_box: Any = f[P_PRICE] if order_type == "limit" else price
    out.append(OrderAccepted(key, f[P_ACCOUNT], market, side, price_box, qty_box, order_type,
                             tif, post_only, client_id, reduce_only, seq=v.seq_box,
                             ts=v.ts_box))
    if not crosses and tif == "GTC":
        (book.bids if is_buy else book.asks).add(order)
        return order
    execute(v, mkt, led, book, order, stp_mode, crosses, out)
    return order


def amend(v: Venue, cmd: C.AmendOrder, out: list[E.Event]) -> None:
    """A quantity cut keeps priority; any other change re-enters the book as a fresh record
    (the old one may still sit, dead, in its level's list) and may match."""
    raw: Any = cmd
    mkt = v.market(raw.market)
    led = v.ledgers[mkt.kind]
    order, new_price, new_qty, shrink = amend_terms(v, mkt, cmd)
    is_buy = order.side == "buy"
    side = v.books[mkt.market].side(is_buy)
    new_remaining = new_qty - (order.qty - order.remaining)
    if shrink:
        before = order.remaining
        side.levels[order.price].qty -= before - new_remaining
        order.remaining = new_remaining
        order.qty = new_qty
        led.shrink(mkt, order, before)
        out.append(E.OrderAmended(seq=v.seq, ts=v.ts, order_id=order.order_id,
                                  account=order.account, market=mkt.market, price=order.price,
                                  qty=new_qty, remaining=new_remaining, kept_priority=True))
        return
    led.check_reprice(mkt, order, new_price)
    crosses = reprice_crosses(v, mkt, order, new_price)
    new_hold = led.amend_terms(mkt, order, new_price, new_remaining)
    # ---- accepted
    side.remove(order)
    led.rehold(mkt, order, new_hold)
    order = Order(order.order_id, order.account, order.market, order.side, new_price, new_qty,
                  new_remaining, new_hold, v.ts, order.tif, order.post_only, order.client_id,
                  order.stp, mkt.maker_fee_ppm, mkt.taker_fee_ppm, order.filled_quote, True,
                  order.acct, order.margin)
    v.orders[order.order_id] = order
    out.append(E.OrderAmended(seq=v.seq, ts=v.ts, order_id=order.order_id,
                              account=order.account, market=mkt.market, price=new_price,
                              qty=new_qty, remaining=new_remaining, kept_priority=False))
    stp_mode = order.stp if order.stp is not None else v.accounts[order.account].stp
    execute(v, mkt, led, v.books[mkt.market], order, stp_mode, crosses, out)


def cancel(v: Venue, cmd: C.CancelOrder, out: list[E.Event]) -> None:
    cancel_fields(v, fields_of(cmd), out)


def cancel_fields(v: Venue, f: Fields, out: list[E.Event]) -> None:
    """``cancel`` with the command's fields already read (``f``, by the ``K_*`` positions)."""
    market = f[K_MARKET]
    mkt = v.markets.get(market) if type(market) is str else None
    if mkt is None:
        raise Refused(X.UNKNOWN_MARKET, f"unknown market {market!r}")
    if mkt.mode == "closed":
        raise Refused(X.MARKET_MODE, f"market {market} is closed: nothing is accepted")
    account = f[K_ACCOUNT]
    order_id = f[K_ORDER_ID]
    order = v.orders.get(order_id) if type(order_id) is int and order_id else None
    if order is not None:
        if type(account) is int:
            owner: int = account  # compared natively: boxing order.account would allocate
            other = order.account != owner
        else:
            other = order.account != account
        if other or order.market != market:
            order = None
    if order is None:
        order = v.find_order(account, market, order_id, f[K_CLIENT_ID])
    book = v.books[market]
    v.close_order(order, mkt, book.bids if order.side == "buy" else book.asks, "CANCELED", out)


def cancel_all(v: Venue, cmd: C.CancelAll, out: list[E.Event]) -> None:
    raw: Any = cmd
    account = raw.account
    market = raw.market
    if type(account) is not int or not isinstance(market, str):
        raise Refused(X.INVALID_ARGUMENT, "account must be an integer, market a string")
    if account:
        v.account(account)
    elif not market:
        raise Refused(X.INVALID_ARGUMENT, "cancel-all needs an account, a market or both")
    if market:
        mkt = v.market(market)
        if not accepts_cancel(mkt.mode):
            raise Refused(X.MARKET_MODE, f"market {market} is {mkt.mode}")
    victims = sorted(
        (o for o in v.orders.values()
         if (not account or o.account == account) and (not market or o.market == market)
         and accepts_cancel(v.markets[o.market].mode)),
        key=lambda o: o.order_id,
    )
    reason = raw.reason if isinstance(raw.reason, str) and raw.reason else "CANCELED"
    for order in victims:
        m = v.markets[order.market]
        v.close_order(order, m, v.books[m.market].side(order.side == "buy"), reason, out)
    if not victims:
        out.append(E.Rejected(seq=v.seq, ts=v.ts, code=X.UNKNOWN_ORDER,
                              message="no open orders matched", command="CancelAll",
                              account=account))


# ---------------------------------------------------------------------- shared terms

def order_terms(v: Venue, mkt: Market, cmd: C.PlaceOrder, band_limit: int = 0,
                min_notional: bool = True) -> Terms:
    """``terms`` of a command (the edge's order test validates with it)."""
    return terms(v, mkt, fields_of(cmd), band_limit, min_notional)


def terms(v: Venue, mkt: Market, f: Fields, band_limit: int = 0,
          min_notional: bool = True) -> Terms:
    """The checks every market kind shares, in one place: account, side, quantity grid,
    flags, client id, mode, limit price or a market order's protective limit, reference
    band, post-only. ``band_limit`` (perpetuals) is the furthest price allowed on this
    side. Returns ``Terms``.

    This is the hot path: regular values pass inline checks, irregular ones fall through
    to the validators that explain them. The command's fields (``f``, by the ``P_*``
    positions) are ``Any``: a command built in-process may carry any type, and compiled code
    would trust the annotations."""
    account = f[P_ACCOUNT]
    acct = v.find_account(account)
    if acct is None:
        raise Refused(X.UNKNOWN_ACCOUNT, f"unknown account {account!r}")
    # each value is compared as its type once it is known (native compares, no boxing)
    side = f[P_SIDE]
    side_name: str = side if isinstance(side, str) else ""
    if side_name == "buy":
        is_buy = True
    elif side_name == "sell":
        is_buy = False
    else:
        raise Refused(X.INVALID_ARGUMENT, f"side must be buy or sell, got {side!r}")
    raw_qty = f[P_QTY]
    if type(raw_qty) is int:
        qty: int = raw_qty
        if not 0 < qty <= mkt.max_qty or qty % mkt.lot_size or qty < mkt.min_qty:
            qty = valid_qty(mkt, qty)
    else:
        qty = valid_qty(mkt, raw_qty)
    raw_post_only = f[P_POST_ONLY]
    client_id = f[P_CLIENT_ID]
    stp = f[P_STP]
    if raw_post_only is not False and raw_post_only is not True:
        raise Refused(X.INVALID_ARGUMENT, "post_only must be a boolean")
    post_only: bool = raw_post_only
    if type(client_id) is str:
        if client_id:
            if len(client_id) > MAX_CLIENT_ID:
                raise Refused(X.INVALID_ARGUMENT, f"client_id must be a string of at most "
                                                  f"{MAX_CLIENT_ID} characters")
            ids = v.client_ids.get(account)
            if ids is not None and client_id in ids:
                raise Refused(X.DUPLICATE_CLIENT_ID, f"client_id {client_id!r} is already "
                                                     "used by an open order")
    elif client_id:
        raise Refused(X.INVALID_ARGUMENT, f"client_id must be a string of at most "
                                          f"{MAX_CLIENT_ID} characters")
    elif client_id != "":
        raise Refused(X.INVALID_ARGUMENT, "client_id must be a string")
    if stp is not None and stp not in STP_MODES:
        raise Refused(X.INVALID_ARGUMENT, f"unknown self-trade prevention mode {stp!r}")
    mode = mkt.mode
    market = mkt.market
    if mode != "open" and not accepts_order(mode, post_only):
        only_post = mode in ("post_only", "recovery")
        raise Refused(X.MARKET_MODE, f"market {market} is {mode}: "
                      + ("only post-only orders are accepted" if only_post
                         else "no new orders are accepted"),
                      field="post_only" if only_post else "")
    book = v.books[market]
    best = (book.asks if is_buy else book.bids).best()
    raw_tif = f[P_TIF]
    tif: str = raw_tif if isinstance(raw_tif, str) else ""
    raw_type = f[P_ORDER_TYPE]
    order_type: str = raw_type if isinstance(raw_type, str) else ""
    if order_type == "limit":
        raw_price = f[P_PRICE]
        if type(raw_price) is int:
            price: int = raw_price
            if not 0 < price < MAX_SHORT or price % mkt.tick_size:
                price = valid_price(mkt, price)
        else:
            price = valid_price(mkt, raw_price)
        if tif != "GTC" and tif != "IOC" and tif != "FOK":
            raise Refused(X.INVALID_ARGUMENT, f"time in force must be GTC, IOC or FOK, "
                                              f"got {raw_tif!r}")
        if post_only and tif != "GTC":
            raise Refused(X.INVALID_ARGUMENT, "post-only orders must be GTC")
        if min_notional and price * qty // mkt.price_div < mkt.min_notional:
            raise Refused(X.MIN_NOTIONAL, f"notional {price * qty // mkt.price_div} below "
                                          f"minimum {mkt.min_notional}", field="notional",
                          limit=mkt.min_notional, value=price * qty // mkt.price_div)
        if band_limit and ((price > band_limit) if is_buy else (price < band_limit)):
            raise Refused(X.PRICE_BAND, f"{side} at {price} is outside the price band "
                                        f"(limit {band_limit})", field="price",
                          limit=band_limit, value=price)
    elif order_type == "market":
        if post_only or f[P_PRICE]:
            raise Refused(X.INVALID_ARGUMENT, "market orders take no price and cannot be "
                                              "post-only")
        if best is None:
            raise Refused(X.NO_LIQUIDITY, f"no {'asks' if is_buy else 'bids'} in {market}")
        band = mkt.market_band_bps
        tick = mkt.tick_size
        if is_buy:
            price = best * (BPS + band) // BPS // tick * tick
            if band_limit:
                price = min(price, band_limit)
        else:
            price = max(tick, -(-best * (BPS - band) // BPS // tick) * tick, band_limit)
        tif = "IOC"
    else:
        raise Refused(X.INVALID_ARGUMENT, f"order type must be limit or market, "
                                          f"got {raw_type!r}")
    if mode != "open":
        check_ref_band(mkt, is_buy, price)
    crosses = best is not None and (best <= price if is_buy else best >= price)
    if post_only and crosses:
        raise Refused(X.POST_ONLY_WOULD_CROSS, f"post-only {side} at {price} would take "
                                               f"liquidity at {best}")
    return (acct, is_buy, qty, price, tif, book, best, crosses, side, post_only, client_id, stp,
            order_type)


def check_fok(book: OrderBook, is_buy: bool, price: int, qty: int, account: int,
              stp_mode: str, crosses: bool) -> None:
    """A fill-or-kill order is accepted only if matching would fill it completely, counting
    what self-trade prevention would do on the way (``expire_maker`` skips the account's own
    orders, the other modes stop at them)."""
    if not (crosses and fok_fillable(book.asks if is_buy else book.bids, is_buy, price, qty,
                                     account, stp_mode)):
        raise Refused(X.FOK_NOT_FILLABLE, f"fill-or-kill {'buy' if is_buy else 'sell'} "
                                          f"{qty} at {price} cannot fill completely")


def fok_fillable(opposite: BookSide, is_buy: bool, limit: int, qty: int, account: int,
                 stp_mode: str) -> bool:
    need = qty
    for price in opposite.prices():
        if (price > limit) if is_buy else (price < limit):
            return False
        for m in opposite.levels[price].orders:
            if not m.live:
                continue
            if m.account == account and stp_mode != "none":
                if stp_mode == "expire_maker":
                    continue
                return False
            need -= m.remaining
            if need <= 0:
                return True
    return False


def amend_terms(v: Venue, mkt: Market, cmd: C.AmendOrder) -> tuple[Order, int, int, bool]:
    """The amend checks every market kind shares: the order, the new price and quantity on
    their grids, something changes, the mode allows it. Returns (order, new price, new
    total quantity, shrink-only) where shrink-only (same price, less quantity) keeps time
    priority and is all ``cancel_only`` accepts."""
    raw: Any = cmd
    order = v.find_order(raw.account, mkt.market, raw.order_id, raw.client_id)
    filled = order.qty - order.remaining
    new_qty = order.qty if raw.new_qty is None else valid_qty(mkt, raw.new_qty)
    new_price = order.price if raw.new_price is None else valid_price(mkt, raw.new_price)
    if new_qty <= filled:
        raise Refused(X.INVALID_QUANTITY, f"new quantity {new_qty} must exceed the "
                                          f"{filled} already filled")
    if new_qty == order.qty and new_price == order.price:
        raise Refused(X.NO_CHANGE, "amend changes neither price nor quantity")
    shrink = new_price == order.price and new_qty < order.qty
    mode = mkt.mode
    if mode in ("halted", "closed") or (mode == "cancel_only" and not shrink):
        raise Refused(X.MARKET_MODE, f"market {mkt.market} is {mode}: amend not accepted")
    return order, new_price, new_qty, shrink


def reprice_crosses(v: Venue, mkt: Market, order: Order, new_price: int) -> bool:
    """Whether a re-entered order would take liquidity; refused where it must not (post-only
    orders, restricted modes) and outside the reference band in restricted modes."""
    is_buy = order.side == "buy"
    if mkt.mode != "open":
        check_ref_band(mkt, is_buy, new_price)
    book = v.books[mkt.market]
    best = (book.asks if is_buy else book.bids).best()
    crosses = best is not None and (best <= new_price if is_buy else best >= new_price)
    if crosses and (order.post_only or mkt.mode != "open"):
        raise Refused(X.POST_ONLY_WOULD_CROSS, f"amended price {new_price} would take "
                                               f"liquidity at {best}")
    return crosses


# ---------------------------------------------------------------------- matching and fills

def execute(v: Venue, mkt: Market, led: Ledger, book: OrderBook, order: Order, stp_mode: str,
            crosses: bool, out: list[E.Event], liquidation: bool = False) -> None:
    """Match a just-accepted (or re-priced) order, then rest or expire the remainder."""

    def forget(o: Order) -> None:
        led.release(mkt, o)
        v.forget(o)

    if crosses:
        def fill(m: Market, maker: Order, taker: Order, price: int, qty: int,
                 o: list[E.Event]) -> None:
            settle_fill(v, led, m, maker, taker, price, qty, o, liquidation)

        opposite = book.asks if order.side == "buy" else book.bids
        match(mkt, book, order, stp_mode, out, fill, v.close_order, forget,
              led.clipper(mkt, order, opposite))
    if order.order_id not in v.orders:
        return
    if order.remaining == 0:
        forget(order)
        return
    if order.tif == "GTC":
        book.side(order.side == "buy").add(order)
    else:
        v.close_order(order, mkt, None, order.tif, out)
    if crosses and book.is_crossed():
        raise GuardViolation(mkt.market, "book_crossed",
                             f"best bid {book.bids.best()} >= best ask {book.asks.best()}")


def settle_fill(v: Venue, led: Ledger, mkt: Market, maker: Order, taker: Order, price: int,
                qty: int, out: list[E.Event], liquidation: bool = False) -> None:
    """One fill: price it, charge the fees (the maker's capped by what it was placed under;
    no taker fee on a liquidation, which pays its own), let the ledger move the money, report
    the trade."""
    notional = price * qty // mkt.price_div
    taker_fee = 0 if liquidation else fee_amount(notional, mkt.taker_fee_ppm)
    maker_fee = fee_amount(notional, maker_rate(mkt.maker_fee_ppm, maker.maker_cap))
    maker.remaining -= qty
    taker.remaining -= qty
    led.settle_fill(mkt, maker, taker, price, qty, notional, maker_fee, taker_fee)
    fees = v.fees
    quote = mkt.quote
    fees[quote] = fees.get(quote, 0) + taker_fee + maker_fee
    maker.filled_quote += notional
    taker.filled_quote += notional
    mkt.last_price = price
    tid = v.next_trade_id
    v.next_trade_id = tid + 1
    out.append(Trade(tid, mkt.market, price, qty, taker.side, maker.order_id,
                       taker.order_id, maker.account, taker.account, maker_fee, taker_fee,
                       maker.remaining, taker.remaining, seq=v.seq_box, ts=v.ts_box))
