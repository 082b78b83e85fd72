"""Liquidation: margin balance < maintenance margin, in live markets only.

1. cancel the account's open perp orders (their holds were keeping nothing safe);
2. while still below maintenance: close the position with the largest maintenance margin
   through the book with an IOC of ``liq_step_ppm`` of it, priced no worse than the step's
   bankruptcy price nor ``liq_slippage_bps`` from the mark; the liquidation fee (capped at what
   equity is left) goes to the insurance fund;
3. what the book cannot take goes, whole, at the bankruptcy notional, to the insurance fund
   (which then holds it) if the fund stays above its own maintenance margin, else to ADL:
   opposite positions ranked by PnL% x leverage are closed against it at the same notional.

The bankruptcy notional of a position gives the account's equity share of it (equity split
across positions by maintenance margin) away with it, so the account ends at exactly 0 when its
last position goes. Before every step the circuit breaker compares liquidated notional in the
rolling window with the market's open interest and halts the market instead of acting.
"""

from collections import deque

from bastion.core import events as E
from bastion.core.commands import Side
from bastion.core.ledger.margin import Key, MarginLedger
from bastion.core.orders import execute
from bastion.core.perp.calc import ceil_div, maintenance, notional, value
from bastion.core.perp.state import INSURANCE, MarginAccount, PerpMarket, Position
from bastion.core.records import Order
from bastion.core.rules import BPS, PPM, GuardViolation
from bastion.core.state import Market

#: A settle pass that loops this often is a defect (liquidations feeding each other forever).
MAX_SETTLE_ROUNDS = 10_000
LIQUIDATION = "liquidation"


def settle(pe: MarginLedger, out: list[E.Event]) -> None:
    """The settle pass after a command: every touched account is re-keyed in the liquidation
    index and, below maintenance in live markets, liquidated (which may touch more)."""
    rounds = 0
    while pe.touched:
        rounds += 1
        if rounds > MAX_SETTLE_ROUNDS:
            raise GuardViolation("", "settle_loop", "liquidations did not converge")
        touched = pe.touched
        pe.touched = {}
        for who, ma in _in_order(touched):
            if ma is None:
                ma = pe.margin_or_none(who[0], who[1])
            cover_flat_loss(pe, who, out, ma)
            cushion = pe.rekey_margin(who, ma)
            if cushion < 0 and pe.all_active(who):
                liquidate(pe, who, out)
    pe.adl_queues.clear()


def _in_order(touched: dict[Key, MarginAccount | None]
              ) -> list[tuple[Key, MarginAccount | None]]:
    """The touched accounts with their margin records, sorted by account (keys are unique, so
    the sort never compares the records); two, a trade's usual count, without the generic
    sort."""
    items = list(touched.items())
    n = len(items)
    if n == 2:
        a, b = items[0][0], items[1][0]
        if a[0] > b[0] or (a[0] == b[0] and a[1] > b[1]):
            items.reverse()
    elif n > 2:
        items.sort()
    return items


def liquidation_order(pe: MarginLedger, mkt: Market, pm: PerpMarket, account: int,
                      is_buy: bool, qty: int, limit: int, out: list[E.Event]) -> Order:
    """An IOC reduce-only order of the liquidation engine; its fee is charged by the caller."""
    v = pe.v
    oid = v.next_order_id
    v.next_order_id = oid + 1
    side: Side = "buy" if is_buy else "sell"
    order = Order(order_id=oid, account=account, market=mkt.market, side=side, price=limit,
                  qty=qty, remaining=qty, hold=0, ts=v.ts, tif="IOC",
                  client_id="", stp="expire_maker")
    v.orders[oid] = order
    pe.reserve(mkt, order, True)
    out.append(E.OrderAccepted(seq=v.seq, ts=v.ts, order_id=oid, account=account,
                               market=mkt.market, side=side, price=limit, qty=qty,
                               order_type=LIQUIDATION, tif="IOC", reduce_only=True))
    book = v.books[mkt.market]
    best = (book.asks if is_buy else book.bids).best()
    crosses = best is not None and (best <= limit if is_buy else best >= limit)
    execute(v, mkt, pe, book, order, "expire_maker", crosses, out, liquidation=True)
    return order


def cover_flat_loss(pe: MarginLedger, who: Key, out: list[E.Event],
                    ma: MarginAccount | None) -> None:
    """A flat account below zero (it closed at a loss larger than its margin) is topped up by
    the insurance fund; a fund that cannot pay goes negative and says so (``shortfall``).
    ``ma``: the account's margin record (None: it has none)."""
    account, asset = who
    if ma is None or ma.collateral >= 0 or account == INSURANCE or ma.positions:
        return
    amount = -ma.collateral
    fund = pe.insurance(asset)
    shortfall = max(0, amount - max(fund.collateral, 0))
    fund.collateral -= amount
    ma.collateral = 0
    pe.touched[(INSURANCE, asset)] = None
    out.append(E.LossCovered(seq=pe.v.seq, ts=pe.v.ts, account=account, asset=asset,
                             amount=amount, shortfall=shortfall))


def _breaker_ok(pe: MarginLedger, pm: PerpMarket, amount: int, out: list[E.Event]) -> bool:
    """Liquidation circuit breaker: trip (halt the market, act on nothing) when this step would
    take liquidated notional in the window above ``liq_breaker_ppm`` of open interest."""
    v = pe.v
    window = pm.liq_window
    horizon = v.ts - pm.liq_window_ms
    while window and window[0][0] <= horizon:
        pm.liq_window_sum -= window.pop(0)[1]
    if pm.guards and pm.liq_breaker_ppm:
        oi_value = notional(pm.open_interest, pm.mark, pm.price_div)
        if (pm.liq_window_sum + amount) * PPM > pm.liq_breaker_ppm * oi_value:
            v.trip(pm.market, "liquidation_breaker",
                      f"liquidating {amount} more would take {pm.liq_window_sum + amount} "
                      f"in {pm.liq_window_ms} ms above {pm.liq_breaker_ppm} ppm of open "
                      f"interest {oi_value}", out)
            return False
    return True


def _record(pe: MarginLedger, pm: PerpMarket, amount: int) -> None:
    pm.liq_window.append((pe.v.ts, amount))
    pm.liq_window_sum += amount


def _pick(pe: MarginLedger, who: Key) -> Position:
    """The position to work on next: largest maintenance margin, then market name."""
    held = pe.held[who]
    return max(held.values(), key=lambda p: (pe.maintenance_of(p), p.market))


def bankruptcy_amount(pe: MarginLedger, who: Key, pos: Position) -> int:
    """Notional at which giving ``pos`` away takes its share of the account's equity with it."""
    ma = pe.margins[who]
    r = pe.risk(ma)
    mm = pe.maintenance_of(pos)
    share = r.equity if r.maintenance == 0 else r.equity * mm // r.maintenance
    if len(pe.held[who]) == 1:
        share = r.equity
    pm = pe.markets[pos.market]
    v = value(pos.size, pm.mark, pm.price_div)
    amount = v - share if pos.size > 0 else -v + share
    return max(amount, 0)


def liquidate(pe: MarginLedger, who: Key, out: list[E.Event]) -> None:
    v = pe.v
    account, asset = who
    ma = pe.margins[who]
    r = pe.risk(ma)
    out.append(E.LiquidationStarted(seq=v.seq, ts=v.ts, account=account, asset=asset,
                                    equity=r.equity, maintenance=r.maintenance))
    if account != INSURANCE:
        for oid in pe.open_orders(account, asset):
            order = v.orders[oid]
            mkt = v.markets[order.market]
            v.close_order(order, mkt, v.books[mkt.market].side(order.side == "buy"),
                             "LIQUIDATION", out)
    exhausted: set[str] = set()
    while who in pe.held:
        r = pe.risk(ma)
        if r.equity >= r.maintenance:
            return
        pos = _pick(pe, who)
        pm = pe.markets[pos.market]
        if account != INSURANCE and pos.market not in exhausted:
            done = _book_step(pe, who, pm, pos, r.equity, out)
            if done is None:
                return  # breaker tripped
            if not done:
                exhausted.add(pos.market)
            continue
        if not _breaker_ok(pe, pm, notional(pos.size, pm.mark, pm.price_div), out):
            return
        _record(pe, pm, notional(pos.size, pm.mark, pm.price_div))
        amount = bankruptcy_amount(pe, who, pos)
        if account != INSURANCE and _fund_can_take(pe, pm, pos, amount):
            _to_insurance(pe, who, pm, pos, amount, out)
        else:
            _adl(pe, who, pm, pos, amount, out)


def _book_step(pe: MarginLedger, who: Key, pm: PerpMarket, pos: Position, equity: int,
               out: list[E.Event]) -> bool | None:
    """One IOC step through the book. True if it filled completely, False if the book could
    not take it within the price limit, None if the circuit breaker tripped."""
    v = pe.v
    mkt = v.markets[pm.market]
    lot = mkt.lot_size
    size = abs(pos.size)
    step = min(size, max(lot, ceil_div(size * pm.liq_step_ppm, PPM * lot) * lot))
    if not _breaker_ok(pe, pm, notional(step, pm.mark, pm.price_div), out):
        return None
    is_buy = pos.size < 0
    tick = mkt.tick_size
    mark = pm.mark
    # the step's bankruptcy price: closing `step` there would leave equity at zero
    give = equity * pm.price_div // step if equity >= 0 else -ceil_div(-equity * pm.price_div,
                                                                       step)
    if is_buy:
        limit = min(mark + give, mark * (BPS + pm.liq_slippage_bps) // BPS) // tick * tick
    else:
        limit = ceil_div(max(mark - give, mark * (BPS - pm.liq_slippage_bps) // BPS, 1),
                         tick) * tick
    if limit <= 0:
        return False
    order = liquidation_order(pe, mkt, pm, who[0], is_buy, step, limit, out)
    filled = order.qty - order.remaining
    if filled:
        _record(pe, pm, notional(filled, mark, pm.price_div))
        fee = 0
        if pm.liq_fee_ppm:
            amount = order.filled_quote
            left = max(0, pe.risk(pe.margins[who]).equity)
            fee = min(amount * pm.liq_fee_ppm // PPM, left)
            if fee:
                pe.margins[who].collateral -= fee
                pe.insurance(pm.settle).collateral += fee
                pe.touched[(INSURANCE, pm.settle)] = None
        out.append(E.Liquidated(seq=v.seq, ts=v.ts, account=who[0], market=pm.market,
                                qty=filled, notional=order.filled_quote, via="book", fee=fee,
                                order_id=order.order_id))
    return filled == step


def _fund_can_take(pe: MarginLedger, pm: PerpMarket, pos: Position, amount: int) -> bool:
    """Would the insurance fund stay at or above its maintenance margin holding this too?"""
    fund = pe.insurance(pm.settle)
    held = pe.held.get((INSURANCE, pm.settle), {})
    r = pe.risk(fund)
    mine = held.get(pm.market)
    size = pos.size + (mine.size if mine else 0)
    cost = (amount if pos.size > 0 else -amount) + (mine.cost if mine else 0)
    old_u = (value(mine.size, pm.mark, pm.price_div) - mine.cost) if mine else 0
    old_mm = pe.maintenance_of(mine) if mine else 0
    equity = r.equity - old_u + value(size, pm.mark, pm.price_div) - cost
    mm = r.maintenance - old_mm + maintenance(pm.tiers, notional(size, pm.mark, pm.price_div))
    return equity >= mm


def _to_insurance(pe: MarginLedger, who: Key, pm: PerpMarket, pos: Position, amount: int,
                  out: list[E.Event]) -> None:
    size = pos.size
    qty = abs(size)
    if size > 0:
        pe.trade(pm, INSURANCE, who[0], qty, amount)
    else:
        pe.trade(pm, who[0], INSURANCE, qty, amount)
    out.append(E.Liquidated(seq=pe.v.seq, ts=pe.v.ts, account=who[0], market=pm.market,
                            qty=qty, notional=amount, via="insurance"))


def adl_ranking(pe: MarginLedger, pm: PerpMarket, long_side: bool) -> deque[Position]:
    """Positions on one side to deleverage, first the most profitable per unit of margin:
    PnL% x leverage for winners, PnL% / leverage for losers; the insurance fund last. Ranked
    once per command (a cascade would otherwise re-rank every position per bankrupt account);
    callers skip entries that closed or flipped since."""
    key = (pm.market, long_side)
    queue = pe.adl_queues.get(key)
    if queue is not None:
        return queue
    scored: list[tuple[int, int, int, Position]] = []
    for account, pos in pe.positions.get(pm.market, {}).items():
        if (pos.size > 0) != long_side:
            continue
        u = value(pos.size, pm.mark, pm.price_div) - pos.cost
        n = notional(pos.size, pm.mark, pm.price_div)
        equity = max(pe.risk(pe.margins[(account, pm.settle)]).equity, 1)
        basis = max(abs(pos.cost), 1)
        if u >= 0:
            score = u * n * 10**12 // (basis * equity)
        else:
            score = u * equity * 10**12 // (basis * max(n, 1))
        scored.append((1 if account == INSURANCE else 0, -score, account, pos))
    scored.sort(key=lambda s: s[:3])
    queue = pe.adl_queues[key] = deque(s[3] for s in scored)
    return queue


def _adl(pe: MarginLedger, who: Key, pm: PerpMarket, pos: Position, amount: int,
         out: list[E.Event]) -> None:
    v = pe.v
    account = who[0]
    size = pos.size
    total = abs(size)
    left = total
    given = 0
    book = pe.positions.get(pm.market, {})
    for _ in range(2):  # a queue ranked earlier in this command may run dry: re-rank once
        queue = adl_ranking(pe, pm, size < 0)
        while left and queue:
            other = queue[0]
            if other.account == account or book.get(other.account) is not other \
                    or (other.size > 0) != (size < 0):
                queue.popleft()  # closed or flipped since the queue was ranked
                continue
            take = min(left, abs(other.size))
            left -= take
            part = amount - given if not left else amount * take // total
            given += part
            if size > 0:
                pe.trade(pm, other.account, account, take, part)
            else:
                pe.trade(pm, account, other.account, take, part)
            out.append(E.Deleveraged(seq=v.seq, ts=v.ts, account=other.account,
                                     market=pm.market, qty=take, notional=part,
                                     counterparty=account))
        if not left:
            break
        pe.adl_queues.pop((pm.market, size < 0), None)
    if left:
        raise GuardViolation(pm.market, "adl", f"no opposite positions left for {left} of "
                                               f"account {account}")
    out.append(E.Liquidated(seq=v.seq, ts=v.ts, account=account, market=pm.market,
                            qty=total, notional=given, via="adl"))
