"""Margin ledger: cross margin per (account, settle asset), positions, perp market records,
TP/SL triggers, and the order-lifecycle verbs for perpetual markets.

An order reserves initial margin (notional / leverage + worst fee) instead of quote or base; a
fill moves positions, not assets. Reduce-only orders reserve nothing and are clipped at every
fill to what is left of the position they reduce, so they can never open or grow one.

Funding is lazy: a funding tick moves the market's cumulative index only; a position settles
what it owes when its size changes (``_move``), and every equity, margin and liquidation figure
counts what it owes since (``positions.risk``). The market's ``funding_pool`` holds what one
side settled before the other, so funds stay exactly conserved at every step.

Every command that changed an account adds it to ``touched``; the engine then runs the settle
pass (``perp.liquidation.settle``): re-key in the liquidation index, liquidate if below
maintenance in live markets.
"""

from collections import deque
from typing import Final

from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.arith import mul, mul_div
from bastion.core.book import BookSide
from bastion.core.ledger.base import Ledger
from bastion.core.matching import STOP, Clip
from bastion.core.perp.calc import (
    ALWAYS_LONG,
    ALWAYS_SHORT,
    PPM,
    ceil_div,
    maintenance,
    notional,
    order_hold,
    threshold,
    tier_for,
)
from bastion.core.perp.liqindex import Entry, LiqIndex
from bastion.core.perp.positions import (
    Risk,
    free_margin,
    free_term,
    funding_owed,
    realize,
    risk,
)
from bastion.core.perp.records import MarginAccount, PerpMarket
from bastion.core.perp.state import (
    INSURANCE,
    RATE_SCALE,
    PerpState,
    Position,
    margin_record,
    margin_state,
    perp_market_record,
    perp_market_state,
    position_record,
    position_state,
)
from bastion.core.perp.triggers import TriggerBook
from bastion.core.records import Order
from bastion.core.rules import BPS, Refused
from bastion.core.state import Account, Market
from bastion.core.venue import Venue

Key = tuple[int, str]
#: Share of an account's margin cushion set aside for funding in the liquidation index (1/N):
#: funding moves slowly, so a small allowance rarely re-checks anyone at a tick.
FUNDING_ALLOWANCE_DIV: Final = 4
#: Soft funding re-checks (``liqindex``) done after each command at most: a funding tick that
#: uses up many allowances at once spreads their re-checks over the commands that follow.
RECHECKS_PER_COMMAND: Final = 16


class MarginLedger(Ledger):
    def __init__(self, v: Venue) -> None:
        super().__init__(True)
        self.v = v
        self.markets: dict[str, PerpMarket] = {}
        self.margins: dict[Key, MarginAccount] = {}
        #: the same margin accounts by settle asset, then account: the hot path's index (an
        #: int-keyed lookup, no key tuple to build, hash and compare)
        self.margin_of: dict[str, dict[int, MarginAccount]] = {}
        #: market -> account -> position
        self.positions: dict[str, dict[int, Position]] = {}
        #: (account, asset) -> market -> position, for accounts holding any: the account's
        #: cross-margin book, the very dict its ``MarginAccount.positions`` is
        self.held: dict[Key, dict[str, Position]] = {}
        self.triggers = TriggerBook()
        self.next_trigger_id = 1
        self.reduce_only: set[int] = set()
        self.liq = LiqIndex()
        #: accounts whose positions or collateral changed in this command (settle pass input),
        #: with their margin record where the code that touched them had it (else None)
        self.touched: dict[Key, MarginAccount | None] = {}
        #: open perp order ids per settle asset, then account: liquidation cancels without a
        #: scan (a set may be empty: it is kept for the account's next order). An account with
        #: a margin record keeps one of its orders in ``MarginAccount.one_order`` instead, so
        #: ``open_orders`` is the whole index of an account
        self.orders_of: dict[str, dict[int, set[int]]] = {}
        #: ADL queues ranked once per command: (market, long side) -> positions
        self.adl_queues: dict[tuple[str, bool], deque[Position]] = {}
        #: markets whose soft funding keys a tick crossed (``recheck_soft`` drains them)
        self.soft_markets: set[str] = set()
        self.recheck_budget = RECHECKS_PER_COMMAND
        #: order entry's context, found once per order: ``entry`` (or the first verb called
        #: without it) sets the market, ``reserve_terms`` the margin account, ``reserve``
        #: uses them up; valid only for the same market within the same command
        self.entry_seq = -1
        self.entry_mkt: Market | None = None
        self.entry_pm: PerpMarket | None = None
        self.entry_ma: MarginAccount | None = None
        #: ... and the account it is of (checked without reading the record)
        self.entry_account = 0

    # ------------------------------------------------------------------ lookups

    def perp_market(self, market: object) -> tuple[Market, PerpMarket]:
        """The spot record and perp record of a perp market, or the right reject."""
        pm = self.markets.get(market) if type(market) is str else None
        if pm is not None:
            return self.v.markets[pm.market], pm
        mkt = self.v.market(market)
        pm = self.markets.get(mkt.market)
        if pm is None:
            raise Refused(X.NOT_PERP, f"{mkt.market} is not a perpetual market")
        return mkt, pm

    def pm_of(self, mkt: Market) -> PerpMarket:
        """The perp record of a perp market, through the link on its spot record (set on
        first use; a lookup by name costs ~190 instructions, and order entry, fills and
        cancels each need it)."""
        pm = mkt.perp
        if isinstance(pm, PerpMarket):
            return pm
        pm = self.markets[mkt.market]
        mkt.perp = pm
        return pm

    def margin(self, account: int, asset: str) -> MarginAccount:
        of = self.margin_of.get(asset)
        if of is None:
            of = self.margin_of[asset] = {}
        ma = of.get(account)
        if ma is None:
            ma = of[account] = self.margins[(account, asset)] = MarginAccount(account, asset)
        return ma

    def order_margin(self, order: Order, asset: str) -> MarginAccount:
        """The margin record of an order's account (made if it has none), kept on the order."""
        ma = order.margin
        if isinstance(ma, MarginAccount):
            return ma
        ma = order.margin = self.margin(order.account, asset)
        return ma

    def margin_or_none(self, account: int, asset: str) -> MarginAccount | None:
        of = self.margin_of.get(asset)
        return of.get(account) if of is not None else None

    def insurance(self, asset: str) -> MarginAccount:
        return self.margin(INSURANCE, asset)

    def leverage(self, ma: MarginAccount | None, pm: PerpMarket) -> int:
        if ma is None or not ma.levered:  # most accounts never set one: no lookup by name
            return pm.default_leverage
        return ma.leverage.get(pm.market, pm.default_leverage)

    def risk(self, ma: MarginAccount) -> Risk:
        return risk(ma.collateral, ma.positions, self.markets, ma.leverage)

    def available(self, ma: MarginAccount | None) -> int:
        """What new orders may reserve: equity - position initial margin - order holds."""
        if ma is None:
            return 0
        pos = ma.only
        if pos is not None and pos.pm is not None:
            return ma.collateral - ma.order_im + free_term(pos, pos.pm,
                                                           ma.leverage if ma.levered else None)
        return free_margin(ma.collateral, ma.order_im, ma.positions, self.markets, ma.leverage)

    def active(self, pm: PerpMarket) -> bool:
        """Liquidations, TP/SL and funding act only on an open market with a fresh oracle that
        arrived after the last mode change."""
        v = self.v
        return (pm.armed and v.markets[pm.market].mode == "open"
                and v.ts - pm.index_ts <= pm.index_max_age_ms)

    def all_active(self, who: Key) -> bool:
        markets = self.markets
        return all(self.active(markets[m]) for m in self.held.get(who, ()))

    def reducible(self, account: int, pm: PerpMarket, is_buy: bool) -> int:
        """How much an order on this side may still reduce the account's position."""
        pos = self.positions.get(pm.market, {}).get(account)
        if pos is None or (pos.size < 0) != is_buy:
            return 0
        return abs(pos.size)

    def maintenance_of(self, pos: Position) -> int:
        pm = self.markets[pos.market]
        return maintenance(pm.tiers, notional(pos.size, pm.mark, pm.price_div))

    # ------------------------------------------------------------------ order entry

    def band(self, mkt: Market, pm: PerpMarket, is_buy: bool) -> int:
        """The furthest price an order may have from the mark (the perp price band)."""
        tick = mkt.tick_size
        if is_buy:
            return pm.mark * (BPS + pm.price_band_bps) // BPS // tick * tick
        return max(tick, ceil_div(pm.mark * (BPS - pm.price_band_bps), BPS * tick) * tick)

    def entry(self, mkt: Market, side: object, reduce_only: object) -> tuple[int, bool]:
        pm = self.pm_of(mkt)
        if type(reduce_only) is not bool:
            raise Refused(X.INVALID_ARGUMENT, "reduce_only must be a boolean")
        if not pm.mark:
            raise Refused(X.NO_MARK_PRICE, f"{mkt.market} has no mark price yet")
        self.entry_seq = self.v.seq
        self.entry_mkt = mkt
        self.entry_pm = pm
        self.entry_ma = None
        return self.band(mkt, pm, isinstance(side, str) and side == "buy"), not reduce_only

    def _entry_pm(self, mkt: Market) -> PerpMarket:
        """The perp record ``entry`` found for this order, else looked up (and kept for
        ``reserve``, with no margin account known yet)."""
        pm = self.entry_pm
        if pm is not None and self.entry_mkt is mkt and self.entry_seq == self.v.seq:
            return pm
        pm = self.entry_pm = self.pm_of(mkt)
        self.entry_seq = self.v.seq
        self.entry_mkt = mkt
        self.entry_ma = None
        return pm

    def reserve_terms(self, acct: Account, mkt: Market, is_buy: bool, qty: int, price: int,
                      market_order: bool, reduce_only: bool) -> tuple[int, int]:
        pm = self._entry_pm(mkt)
        if reduce_only:
            can = self.reducible(acct.account, pm, is_buy)
            if not can:
                raise Refused(X.REDUCE_ONLY, f"reduce-only {'buy' if is_buy else 'sell'} has "
                                             f"no opposite position to reduce in {mkt.market}")
            return min(qty, can), 0
        settle = pm.settle
        known = acct.margin
        if isinstance(known, MarginAccount) and known.asset == settle:
            ma: MarginAccount | None = known
        else:
            ma = self.margin_or_none(acct.account, settle)
            if ma is not None:
                acct.margin = ma
        self.entry_ma = ma
        self.entry_account = acct.account
        hold = order_hold(mul(price, qty) // mkt.price_div, self.leverage(ma, pm),
                          mkt.taker_fee_ppm)
        free = self.available(ma)
        if hold > free:
            raise Refused(X.INSUFFICIENT_MARGIN, f"order needs {hold} {pm.settle} of margin, "
                                                 f"available {free}", field="margin",
                          limit=free, value=hold)
        return qty, hold

    def reserve(self, mkt: Market, order: Order, reduce_only: bool) -> bool:
        settle = self._entry_pm(mkt).settle
        ma = self.entry_ma
        self.entry_mkt = None  # used up: a later order looks its own up
        self.entry_ma = None
        if ma is None or self.entry_account != order.account:
            ma = self.margin_or_none(order.account, settle)
        if order.hold:
            if ma is None:
                ma = self.margin(order.account, settle)
            ma.order_im += order.hold
        order.margin = ma
        self.opened(order, settle, ma)
        if reduce_only:
            self.reduce_only.add(order.order_id)
        return reduce_only

    def opened(self, order: Order, settle: str, ma: MarginAccount | None) -> None:
        """Index a newly accepted perp order under its account (``ma``: its margin account
        in ``settle``, if it has one: it holds the order in ``one_order`` if free, else keeps
        the index's set at hand)."""
        if ma is not None:
            if not ma.one_order:
                ma.one_order = order.order_id
                return
            mine = ma.orders
            if mine is not None:
                mine.add(order.order_id)
                return
        of = self.orders_of.get(settle)
        if of is None:
            of = self.orders_of[settle] = {}
        mine = of.get(order.account)
        if mine is None:
            mine = of[order.account] = set()
        mine.add(order.order_id)
        if ma is not None:
            ma.orders = mine

    def open_orders(self, account: int, asset: str) -> list[int]:
        """The account's open perp order ids settling in ``asset``, ascending."""
        of = self.orders_of.get(asset)
        mine = of.get(account) if of is not None else None
        ids = sorted(mine) if mine else []
        ma = self.margin_or_none(account, asset)
        if ma is not None and ma.one_order:
            ids.append(ma.one_order)
            ids.sort()
        return ids

    # ------------------------------------------------------------------ fills

    def settle_fill(self, mkt: Market, maker: Order, taker: Order, price: int, qty: int,
                    notional: int, maker_fee: int, taker_fee: int) -> None:
        pm = self.pm_of(mkt)
        settle = pm.settle
        tma = self.order_margin(taker, settle)  # found once per fill, not per step
        mma = self.order_margin(maker, settle)
        if taker.side == "buy":
            self._move(pm, taker.account, qty, notional, tma)
            self._move(pm, maker.account, -qty, notional, mma)
        else:
            self._move(pm, maker.account, qty, notional, mma)
            self._move(pm, taker.account, -qty, notional, tma)
        tma.collateral -= taker_fee
        mma.collateral -= maker_fee
        _shrink_hold(mma, maker, maker.remaining + qty)
        _shrink_hold(tma, taker, taker.remaining + qty)

    def clipper(self, mkt: Market, order: Order, opposite: BookSide) -> Clip | None:
        """Reduce-only orders never open or grow a position, whatever changed since."""
        ro = self.reduce_only
        if not ro:
            return None
        pm = self.pm_of(mkt)
        v = self.v
        taker_ro = order.order_id in ro

        def clip(maker: Order, taker: Order, qty: int, o: list[E.Event]) -> int:
            if taker_ro:
                can = self.reducible(taker.account, pm, taker.side == "buy")
                if can == 0:
                    v.close_order(taker, mkt, None, X.REDUCE_ONLY, o)
                    return STOP
                qty = min(qty, can)
            if maker.order_id in ro:
                can = self.reducible(maker.account, pm, maker.side == "buy")
                if can < maker.remaining:
                    if can == 0:
                        v.close_order(maker, mkt, opposite, X.REDUCE_ONLY, o)
                        return 0
                    cut = maker.remaining - can
                    maker.remaining = can
                    maker.qty -= cut
                    opposite.levels[maker.price].qty -= cut
                    o.append(E.OrderAmended(seq=v.seq, ts=v.ts, order_id=maker.order_id,
                                            account=maker.account, market=mkt.market,
                                            price=maker.price, qty=maker.qty, remaining=can,
                                            kept_priority=True))
                    qty = min(qty, can)
            return qty

        return clip

    def release(self, mkt: Market, order: Order) -> None:
        account = order.account
        known = order.margin
        if isinstance(known, MarginAccount):
            ma: MarginAccount | None = known
        else:
            ma = self.margin_or_none(account, self.pm_of(mkt).settle)
        if order.hold:
            assert ma is not None  # a hold is reserved on the account's margin
            ma.order_im -= order.hold
            order.hold = 0
        if self.reduce_only:
            self.reduce_only.discard(order.order_id)
        if ma is not None:
            if ma.one_order == order.order_id:
                ma.one_order = 0
                return
            mine = ma.orders
        else:
            mine = None
        if mine is None:
            of = self.orders_of.get(self.pm_of(mkt).settle)
            mine = of.get(account) if of is not None else None
        if mine is not None:  # an emptied set stays: the account's next order reuses it
            mine.discard(order.order_id)

    # ------------------------------------------------------------------ amend

    def shrink(self, mkt: Market, order: Order, before: int) -> None:
        if order.hold:
            _shrink_hold(self.margin(order.account, self.pm_of(mkt).settle), order,
                         before)

    def check_reprice(self, mkt: Market, order: Order, new_price: int) -> None:
        pm = self.pm_of(mkt)
        is_buy = order.side == "buy"
        band_limit = self.band(mkt, pm, is_buy)
        if (new_price > band_limit) if is_buy else (new_price < band_limit):
            raise Refused(X.PRICE_BAND, f"amended price {new_price} is outside the price band "
                                        f"around mark {pm.mark}", field="price",
                          limit=band_limit, value=new_price)

    def amend_terms(self, mkt: Market, order: Order, new_price: int, new_remaining: int
                    ) -> int:
        if order.order_id in self.reduce_only:
            return 0
        pm = self.pm_of(mkt)
        ma = self.margin_or_none(order.account, pm.settle)
        new_hold = order_hold(new_price * new_remaining // mkt.price_div, self.leverage(ma, pm),
                              mkt.taker_fee_ppm)
        free = self.available(ma) + order.hold
        if new_hold > free:
            raise Refused(X.INSUFFICIENT_MARGIN, f"amended order needs {new_hold} {pm.settle} "
                                                 f"of margin, available {free}", field="margin",
                          limit=free, value=new_hold)
        return new_hold

    def rehold(self, mkt: Market, order: Order, new_hold: int) -> None:
        ma = self.margin_or_none(order.account, self.pm_of(mkt).settle)
        if ma is not None:
            ma.order_im += new_hold - order.hold

    def mode_changed(self, mkt: Market, out: list[E.Event]) -> None:
        """Any mode change disarms the market until a fresh index arrives while it is open;
        closing it also cancels its triggers."""
        pm = self.pm_of(mkt)
        pm.armed = False
        if mkt.mode == "closed":
            for t in self.triggers.of_market(mkt.market):
                self.triggers.remove(t.trigger_id)
                out.append(E.TriggerCanceled(seq=self.v.seq, ts=self.v.ts,
                                             trigger_id=t.trigger_id, account=t.account,
                                             market=t.market, reason="MARKET_CLOSED"))

    # ------------------------------------------------------------------ positions

    def trade(self, pm: PerpMarket, buyer: int, seller: int, qty: int, amount: int) -> None:
        """Move ``qty`` from seller to buyer for ``amount`` settle units (book trades,
        insurance take-overs and ADL all come through here)."""
        self._move(pm, buyer, qty, amount, None)
        self._move(pm, seller, -qty, amount, None)

    def _move(self, pm: PerpMarket, account: int, delta: int, amount: int,
              ma: MarginAccount | None) -> None:
        """``ma``: the account's margin in ``pm``'s settle asset, if the caller has it."""
        market = pm.market
        asset = pm.settle
        key = (account, asset)
        if ma is None:
            ma = self.margin(account, asset)
        pos = ma.only  # the usual case, without a lookup in the account's book
        if pos is None or pos.pm is not pm:
            pos = ma.positions.get(market)  # found by market name, not by account id
        if pos is None:
            held = ma.positions
            book = self.positions.get(market)
            if book is None:
                book = self.positions[market] = {}
            pos = book[account] = Position(account=account, market=market, size=0, cost=0,
                                           funding_index=pm.funding_index, pm=pm)
            if not held:
                self.held[key] = held
            held[market] = pos
            ma.only = pos if len(held) == 1 else None
        elif pos.funding_index != pm.funding_index:
            self.settle_funding(pm, pos, ma)
        old = pos.size
        ma.collateral += realize(pos, delta, amount)
        pm.open_interest += (pos.size if pos.size > 0 else 0) - (old if old > 0 else 0)
        if pos.size == 0:
            held = ma.positions
            del self.positions[market][account]
            del held[market]
            if not held:
                del self.held[key]
            ma.only = _sole(held)
        self.touched[key] = ma

    def settle_funding(self, pm: PerpMarket, pos: Position, ma: MarginAccount) -> None:
        """Bring one position to the market's funding index: pay or collect through the pool."""
        owed = funding_owed(pos, pm)
        pos.funding_index = pm.funding_index
        if owed:
            ma.collateral -= owed
            pos.funding_paid += owed
            pm.funding_pool += owed

    # ------------------------------------------------------------------ liquidation index

    def recheck_soft(self) -> None:
        """Add up to ``recheck_budget`` accounts whose soft funding key a tick crossed to the
        settle pass (``LiqIndex.drain_funding``). Half their funding allowance is left, and
        their hard key still forces a re-check in the tick that uses it up, so spreading
        these over the commands after a tick is safe."""
        budget = self.recheck_budget
        touched = self.touched
        for market in sorted(self.soft_markets):
            pm = self.markets[market]
            settle = pm.settle
            found, more = self.liq.drain_funding(market, settle, pm.funding_index, budget)
            for account in found:
                touched[(account, settle)] = None
            budget -= len(found)
            if more or budget <= 0:
                return
            self.soft_markets.discard(market)

    def rekey_touched(self) -> None:
        """Re-key (never liquidate) accounts left over from a command a guard aborted, so the
        index is sound and nothing depends on history that a snapshot would not hold."""
        self.adl_queues.clear()
        if self.touched:
            for who in sorted(self.touched):
                self.rekey(who)
            self.touched.clear()

    def rekey(self, who: Key) -> int:
        """Recompute an account's cushion (``equity - maintenance``, funding owed counted) and
        its liquidation-index entries; returns the cushion."""
        return self.rekey_margin(who, self.margin_or_none(who[0], who[1]))

    def rekey_margin(self, who: Key, ma: MarginAccount | None) -> int:
        """``rekey`` with the account's margin record (None: it has none) at hand."""
        if ma is None:
            self.liq.forget(who)
            return 0
        only = ma.only
        if only is not None:
            return self._rekey_one(who, ma, only.market, only)
        positions = ma.positions
        if not positions:
            self.liq.forget(who)
            return 0  # nothing to liquidate (a flat loss is cover_flat_loss's job)
        markets = self.markets
        base = ma.collateral
        terms: list[tuple[str, PerpMarket, Position, int, int]] = []
        total_notional = 0
        for name, pos in positions.items():
            pm = markets[name]
            mark = pm.mark
            div = pm.price_div
            size = pos.size
            n = mul(size if size > 0 else -size, mark) // div
            term = mul(size, mark) // div
            if n > 0:  # calc.cushion_term, inlined
                tiers = pm.tiers
                t = tiers[0] if n <= tiers[0].max_notional else tier_for(tiers, n)
                term += (t.cum_ppm - mul(n, t.mmr_ppm)) // PPM  # minus ceil(mm)
            base += term - pos.cost - funding_owed(pos, pm)
            total_notional += n
            terms.append((name, pm, pos, term, n))
        cushion = base
        entries: dict[str, Entry] = {}
        if cushion < 0:
            for name, pm, pos, _, _ in terms:
                is_long = pos.size > 0
                index = pm.funding_index
                entries[name] = ((True, ALWAYS_LONG, index, index) if is_long
                                 else (False, ALWAYS_SHORT, index, index))
        else:
            count = len(terms)
            allowance = cushion // FUNDING_ALLOWANCE_DIV
            budget = cushion - allowance
            for name, pm, pos, term, n in terms:
                if total_notional:
                    share = budget * n // total_notional
                    fshare = allowance * n // total_notional
                else:
                    share = budget // count
                    fshare = allowance // count
                size = pos.size
                key = threshold(pm.tiers, size, pm.price_div, term - share + 2)
                # funding may cost this position up to fshare: |size| * d_index / den + 1
                reach = mul_div(fshare - 1, pm.price_div, RATE_SCALE, abs(size))
                soft = reach // 2 + 1  # half the allowance: re-checked soon, a few per command
                if size > 0:
                    entries[name] = (True, key, pm.funding_index + reach + 1,
                                     pm.funding_index + soft)
                else:
                    entries[name] = (False, key, pm.funding_index - reach - 1,
                                     pm.funding_index - soft)
        self.liq.set(who, entries, ma)
        return cushion

    def _rekey_one(self, who: Key, ma: MarginAccount, name: str, pos: Position) -> int:
        """``rekey`` of an account with one position, the usual case: the whole cushion is
        that position's budget, and its one entry is set directly (``LiqIndex.set_one``)."""
        pm = pos.pm
        if pm is None:
            pm = self.markets[name]
        size = pos.size
        div = pm.price_div
        mark = pm.mark
        n = mul(size if size > 0 else -size, mark) // div
        term = mul(size, mark) // div
        if n > 0:  # calc.cushion_term, inlined (as in ``rekey``)
            tiers = pm.tiers
            t = tiers[0] if n <= tiers[0].max_notional else tier_for(tiers, n)
            term += (t.cum_ppm - mul(n, t.mmr_ppm)) // PPM  # minus ceil(mm)
        cushion = ma.collateral + term - pos.cost - funding_owed(pos, pm)
        index = pm.funding_index
        name = pm.market  # one string object for every re-key: its compare is a pointer's
        if cushion < 0:
            self.liq.set_one(who, name, size > 0, ALWAYS_LONG if size > 0 else ALWAYS_SHORT,
                             index, index, ma)
            return cushion
        allowance = cushion // FUNDING_ALLOWANCE_DIV
        key = threshold(pm.tiers, size, div, term - (cushion - allowance) + 2)
        # funding may cost this position up to the allowance: |size| * d_index / den + 1
        reach = mul_div(allowance - 1, div, RATE_SCALE, size if size > 0 else -size)
        soft = reach // 2 + 1  # half the allowance: re-checked soon, a few per command
        if size > 0:
            self.liq.set_one(who, name, True, key, index + reach + 1, index + soft, ma)
        else:
            self.liq.set_one(who, name, False, key, index - reach - 1, index - soft, ma)
        return cushion

    # ------------------------------------------------------------------ state

    def export(self) -> PerpState | None:
        if not self.markets and not self.margins:
            return None
        positions = [position_state(p) for name in sorted(self.positions)
                     for _, p in sorted(self.positions[name].items())]
        margins = [margin_state(m) for _, m in sorted(self.margins.items())]
        return PerpState(
            markets=[perp_market_state(self.markets[k]) for k in sorted(self.markets)],
            margins=margins,
            positions=positions,
            triggers=[self.triggers.by_id[k] for k in sorted(self.triggers.by_id)],
            reduce_only_orders=sorted(self.reduce_only),
            next_trigger_id=self.next_trigger_id,
        )

    def restore(self, state: PerpState | None) -> None:
        if state is None:
            return
        self.markets = {m.market: perp_market_record(m) for m in state.markets}
        self.margins = {(m.account, m.asset): margin_record(m) for m in state.margins}
        for (account, asset), ma in self.margins.items():
            self.margin_of.setdefault(asset, {})[account] = ma
        for saved in state.positions:
            pos = position_record(saved)
            pos.pm = self.markets[pos.market]
            self.positions.setdefault(pos.market, {})[pos.account] = pos
            settle = self.markets[pos.market].settle
            ma = self.margin(pos.account, settle)
            self.held[(pos.account, settle)] = ma.positions
            ma.positions[pos.market] = pos
        for ma in self.margins.values():
            ma.only = _sole(ma.positions)
        for t in state.triggers:
            self.triggers.add(t)
        self.reduce_only = set(state.reduce_only_orders)
        self._link_accounts()
        for order in self.v.orders.values():
            pm = self.markets.get(order.market)
            if pm is not None:
                mo = self.margin_or_none(order.account, pm.settle)
                if mo is not None:
                    order.margin = mo
                self.opened(order, pm.settle, mo)
        self.next_trigger_id = state.next_trigger_id
        for who in sorted(self.held):
            self.rekey(who)

    def _link_accounts(self) -> None:
        """Give every restored margin record's spot account a reference to it, as order
        entry would on the account's first order: a restored engine then starts with the
        links in place, not paying for them one account at a time on the hot path (10k
        accounts meant ~1.5k instructions each). Order sets are made when a second order
        needs one (``opened``)."""
        accounts = self.v.accounts
        for (account, _), ma in sorted(self.margins.items()):
            acct = accounts.get(account)
            if acct is not None and acct.margin is None:
                acct.margin = ma

    def totals(self) -> dict[str, int]:
        """Per settle asset: sum(collateral) + funding pools - sum(position cost). With spot
        balances and fees this must equal net deposits (``Engine.check_invariants``)."""
        totals: dict[str, int] = {}
        for (_, asset), ma in self.margins.items():
            totals[asset] = totals.get(asset, 0) + ma.collateral
        for name, pm in self.markets.items():
            asset = pm.settle
            book = self.positions.get(name, {})
            totals[asset] = (totals.get(asset, 0) + pm.funding_pool
                             - sum(p.cost for p in book.values()))
        return totals

    def audit(self) -> list[str]:
        """O(state) audit of the margin ledger (funds conservation is checked by the engine)."""
        problems: list[str] = []
        v = self.v
        holds: dict[Key, int] = {}
        for order in v.orders.values():
            pm = self.markets.get(order.market)
            if pm is None:
                continue
            key = (order.account, pm.settle)
            holds[key] = holds.get(key, 0) + order.hold
            if order.hold < 0:
                problems.append(f"order {order.order_id} negative hold {order.hold}")
            if order.order_id in self.reduce_only and order.hold:
                problems.append(f"reduce-only order {order.order_id} holds {order.hold}")
        for oid in self.reduce_only:
            if oid not in v.orders:
                problems.append(f"reduce-only flag on closed order {oid}")
        indexed = {oid for of in self.orders_of.values() for ids in of.values() for oid in ids}
        ones = [ma.one_order for ma in self.margins.values() if ma.one_order]
        if len(set(ones)) != len(ones) or indexed.intersection(ones):
            problems.append("per-account order index holds an order twice")
        indexed.update(ones)
        perp_orders = {o.order_id for o in v.orders.values() if o.market in self.markets}
        if indexed != perp_orders:
            problems.append(f"per-account order index off by {sorted(indexed ^ perp_orders)[:5]}")
        for key, ma in self.margins.items():
            if ma.only is not _sole(ma.positions):
                problems.append(f"margin {key}: its one-position link is off")
            if ma.levered != bool(ma.leverage):
                problems.append(f"margin {key}: its leverage flag is off")
            if ma.order_im != holds.get(key, 0):
                problems.append(f"margin {key} order_im {ma.order_im} != holds "
                                f"{holds.get(key, 0)}")
            if key not in self.held and ma.collateral < 0 and ma.account != INSURANCE:
                problems.append(f"flat account {key} has negative collateral {ma.collateral}")
        for name, pm in self.markets.items():
            book = self.positions.get(name, {})
            net = sum(p.size for p in book.values())
            if net:
                problems.append(f"{name}: positions net to {net}, not zero")
            oi = sum(p.size for p in book.values() if p.size > 0)
            if oi != pm.open_interest:
                problems.append(f"{name}: open interest {pm.open_interest} != longs {oi}")
            owed = sum(funding_owed(p, pm) for p in book.values())
            if pm.funding_pool + owed < 0:
                problems.append(f"{name}: funding pool {pm.funding_pool} cannot pay the "
                                f"{-owed} owed to positions")
            for account, pos in book.items():
                if pos.size == 0:
                    problems.append(f"{name}: empty position of {account} kept")
                if self.held.get((account, pm.settle), {}).get(name) is not pos:
                    problems.append(f"{name}: position {account} missing from its account")
                owner = self.margins.get((account, pm.settle))
                if owner is not None and self.held.get((account, pm.settle)) is not owner.positions:
                    problems.append(f"{name}: account {account}'s book is not its margin's")
                if (account, pm.settle) not in self.margins:
                    problems.append(f"{name}: position {account} without a margin account")
            if v.markets[name].kind != "perp":
                problems.append(f"{name}: perp record on a {v.markets[name].kind} market")
        n_held = sum(len(p) for p in self.held.values())
        if n_held != sum(len(p) for p in self.positions.values()):
            problems.append("account position index disagrees with market position index")
        return problems


def _sole(positions: dict[str, Position]) -> Position | None:
    """``MarginAccount.only`` for this book: its position if it holds exactly one."""
    if len(positions) != 1:
        return None
    for pos in positions.values():
        return pos
    return None


def _shrink_hold(ma: MarginAccount, order: Order, before: int) -> None:
    """Holds shrink in proportion to the remaining quantity (zero when fully filled); ``ma``
    is the order's account's margin."""
    if order.hold:
        keep = mul_div(order.hold, order.remaining, 1, before)
        ma.order_im -= order.hold - keep
        order.hold = keep
