"""The one matching loop: price-time priority over a book, for every market kind.

Spot and perpetual markets differ only in what a fill does to accounts (asset exchange vs.
position and margin) and in whether a fill may first be clipped (reduce-only orders), so those
arrive as callables; priority, self-trade prevention and level bookkeeping live here once.
"""

from collections.abc import Callable

from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.book import BookSide, OrderBook
from bastion.core.records import Order
from bastion.core.rules import GuardViolation
from bastion.core.state import Market

#: ``fill(mkt, maker, taker, price, qty, out)``: settle one fill, decrement both remainings.
Fill = Callable[[Market, Order, Order, int, int, list[E.Event]], None]
#: ``close(order, mkt, side_or_None, reason, out)``: take an order off the book and out of state.
Close = Callable[[Order, Market, BookSide | None, str, list[E.Event]], None]
#: ``clip(maker, taker, qty, out)``: the quantity this fill may have; ``0`` when the maker was
#: closed instead (move on), ``STOP`` when the taker was closed (matching ends).
Clip = Callable[[Order, Order, int, list[E.Event]], int]
STOP = -1


def match(mkt: Market, book: OrderBook, taker: Order, stp_mode: str, out: list[E.Event],
          fill: Fill, close: Close, forget: Callable[[Order], None],
          clip: Clip | None = None) -> None:
    is_buy = taker.side == "buy"
    opposite = book.asks if is_buy else book.bids
    limit = taker.price
    levels = opposite.levels
    while taker.remaining:
        best = opposite.best()
        if best is None or ((best > limit) if is_buy else (best < limit)):
            return
        level = levels[best]
        while taker.remaining and level.count:
            maker = level.front()
            if not maker.live:
                level.pop_front()
                continue
            if maker.account == taker.account and stp_mode != "none":
                if stp_mode != "expire_taker":
                    close(maker, mkt, opposite, X.SELF_TRADE, out)
                if stp_mode != "expire_maker":
                    close(taker, mkt, None, X.SELF_TRADE, out)
                    return
                continue
            qty = maker.remaining if maker.remaining < taker.remaining else taker.remaining
            if clip is not None:
                qty = clip(maker, taker, qty, out)
                if qty == STOP:
                    return
                if qty == 0:
                    continue
            fill(mkt, maker, taker, best, qty, out)
            level.qty -= qty
            if maker.remaining == 0:
                maker.live = False
                level.pop_front()
                level.count -= 1
                forget(maker)
        if level.count == 0 and best in levels:
            opposite.drop(best)


def execute(mkt: Market, book: OrderBook, order: Order, crosses: bool, out: list[E.Event],
            run_match: Callable[[], None], close: Close, forget: Callable[[Order], None],
            alive: Callable[[int], bool]) -> None:
    """Match a just-accepted (or re-priced) order, then rest or expire the remainder."""
    if crosses:
        run_match()
    if not alive(order.order_id):
        return
    if order.remaining == 0:
        forget(order)
        return
    if order.tif == "GTC":
        book.side(order.side == "buy").add(order)
    else:
        close(order, mkt, None, order.tif, out)
    if crosses and book.is_crossed():
        raise GuardViolation(mkt.market, "book_crossed",
                             f"best bid {book.bids.best()} >= best ask {book.asks.best()}")
