"""A deliberately simple, obviously correct spot exchange for one market, written for tests.

No indexes, no incremental bookkeeping, no speed: resting orders are one list in arrival order;
the best maker is found by scanning it; a fill-or-kill order is accepted exactly when running
the match on a copy of the book fills it completely; an account's available funds are derived
from scratch (cash it owns minus what its open orders must hold). The engine must agree with it
on every accepted order, fill, price, quantity, fee, self-trade outcome and reject code.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

PPM = 1_000_000
BPS = 10_000
MAX_INT = 2**62
STP = ("expire_taker", "expire_maker", "expire_both", "none")


@dataclass
class Spec:
    """The market's rules as plain integers."""

    tick: int
    lot: int
    min_qty: int
    max_qty: int
    min_notional: int
    price_div: int
    maker_ppm: int
    taker_ppm: int
    band_bps: int


@dataclass
class Resting:
    order_id: int
    account: int
    is_buy: bool
    price: int
    remaining: int
    client_id: str
    taker_cap: int
    maker_cap: int
    qty: int = 0
    post_only: bool = False
    stp: str | None = None


@dataclass
class Fill:
    price: int
    qty: int
    maker: int
    taker: int
    maker_fee: int
    taker_fee: int


@dataclass
class Outcome:
    """What one command did: its reject code, or the order it accepted and what followed."""

    reject: str = ""
    order_id: int = 0
    qty: int = 0
    fills: list[Fill] = field(default_factory=list)
    #: (order id, reason) of every order that left the book other than by filling
    canceled: list[tuple[int, str]] = field(default_factory=list)
    #: (order id, price, total qty, remaining, kept priority) of an amend
    amended: list[tuple[int, int, int, int, bool]] = field(default_factory=list)


def fee(notional: int, rate: int) -> int:
    return notional * rate // PPM if rate >= 0 else -(notional * -rate // PPM)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class Reference:
    def __init__(self, spec: Spec, cash: dict[int, dict[str, int]]) -> None:
        self.spec = spec
        self.book: list[Resting] = []
        #: every account's own money per asset ("base", "quote"), holds included
        self.cash = copy.deepcopy(cash)
        self.next_id = 1

    # ------------------------------------------------------------------ derived views

    def hold(self, is_buy: bool, price: int, qty: int, fee_ppm: int) -> int:
        if not is_buy:
            return qty
        notional = ceil_div(price * qty, self.spec.price_div)
        return notional + fee(notional, max(fee_ppm, 0))

    def held(self, account: int, asset: str) -> int:
        return sum(self.hold(o.is_buy, o.price, o.remaining, o.taker_cap) for o in self.book
                   if o.account == account and (asset == "quote") == o.is_buy)

    def available(self, account: int, asset: str) -> int:
        return self.cash[account][asset] - self.held(account, asset)

    def best_maker(self, taker_is_buy: bool) -> Resting | None:
        makers = [o for o in self.book if o.is_buy != taker_is_buy]
        if not makers:
            return None
        best = min(o.price for o in makers) if taker_is_buy else max(o.price for o in makers)
        return next(o for o in makers if o.price == best)  # earliest at the best price

    # ------------------------------------------------------------------ commands

    def place(self, account: int, side: str, qty: int, price: int, tif: str = "GTC",
              order_type: str = "limit", post_only: bool = False, stp: str | None = None,
              client_id: str = "", account_stp: str = "expire_taker") -> Outcome:
        s = self.spec
        is_buy = side == "buy"
        if account not in self.cash:
            return Outcome("UNKNOWN_ACCOUNT")
        if not 0 < qty <= MAX_INT:
            return Outcome("INVALID_QUANTITY")
        if qty % s.lot:
            return Outcome("LOT_SIZE")
        if qty < s.min_qty:
            return Outcome("MIN_QUANTITY")
        if qty > s.max_qty:
            return Outcome("MAX_QUANTITY")
        if client_id and any(o.client_id == client_id and o.account == account
                             for o in self.book):
            return Outcome("DUPLICATE_CLIENT_ID")
        if stp is not None and stp not in STP:
            return Outcome("INVALID_ARGUMENT")
        best = self.best_maker(is_buy)
        if order_type == "limit":
            if not 0 < price <= MAX_INT:
                return Outcome("INVALID_PRICE")
            if price % s.tick:
                return Outcome("TICK_SIZE")
            if post_only and tif != "GTC":
                return Outcome("INVALID_ARGUMENT")
            if price * qty // s.price_div < s.min_notional:
                return Outcome("MIN_NOTIONAL")
        else:
            if post_only or price:
                return Outcome("INVALID_ARGUMENT")
            if best is None:
                return Outcome("NO_LIQUIDITY")
            if is_buy:
                price = best.price * (BPS + s.band_bps) // BPS // s.tick * s.tick
            else:
                price = max(s.tick, ceil_div(best.price * (BPS - s.band_bps), BPS * s.tick)
                            * s.tick)
            tif = "IOC"
        crosses = best is not None and (best.price <= price if is_buy else best.price >= price)
        if post_only and crosses:
            return Outcome("POST_ONLY_WOULD_CROSS")
        asset = "quote" if is_buy else "base"
        free = self.available(account, asset)
        if self.hold(is_buy, price, qty, s.taker_ppm) > free:
            if not (order_type == "market" and is_buy):
                return Outcome("INSUFFICIENT_FUNDS")
            qty = qty // s.lot * s.lot
            while qty > 0 and self.hold(True, price, qty, s.taker_ppm) > free:
                qty -= s.lot
            if qty < s.min_qty:
                return Outcome("INSUFFICIENT_FUNDS")
        mode = stp if stp is not None else account_stp
        taker = Resting(self.next_id, account, is_buy, price, qty, client_id, s.taker_ppm,
                        s.maker_ppm, qty, post_only, stp)
        if tif == "FOK":
            trial = copy.deepcopy(self)
            trial_taker = copy.deepcopy(taker)
            trial.match(trial_taker, mode, Outcome())
            if trial_taker.remaining:
                return Outcome("FOK_NOT_FILLABLE")
        self.next_id += 1
        out = Outcome(order_id=taker.order_id, qty=qty)
        alive = self.match(taker, mode, out)
        if alive and taker.remaining:
            if tif == "GTC":
                self.book.append(taker)
            else:
                out.canceled.append((taker.order_id, tif))
        return out

    def match(self, taker: Resting, stp: str, out: Outcome) -> bool:
        """Fill ``taker`` against the book; False if self-trade prevention expired it."""
        s = self.spec
        while taker.remaining:
            maker = self.best_maker(taker.is_buy)
            if maker is None or (maker.price > taker.price if taker.is_buy
                                 else maker.price < taker.price):
                return True
            if maker.account == taker.account and stp != "none":
                if stp in ("expire_maker", "expire_both"):
                    self.book.remove(maker)
                    out.canceled.append((maker.order_id, "SELF_TRADE"))
                if stp in ("expire_taker", "expire_both"):
                    out.canceled.append((taker.order_id, "SELF_TRADE"))
                    return False
                continue
            qty = min(maker.remaining, taker.remaining)
            notional = maker.price * qty // s.price_div
            taker_fee = fee(notional, s.taker_ppm)
            maker_fee = fee(notional, min(s.maker_ppm, max(maker.maker_cap, 0)))
            buyer, seller = (taker, maker) if taker.is_buy else (maker, taker)
            buyer_fee, seller_fee = ((taker_fee, maker_fee) if taker.is_buy
                                     else (maker_fee, taker_fee))
            self.cash[buyer.account]["quote"] -= notional + buyer_fee
            self.cash[buyer.account]["base"] += qty
            self.cash[seller.account]["base"] -= qty
            self.cash[seller.account]["quote"] += notional - seller_fee
            maker.remaining -= qty
            taker.remaining -= qty
            out.fills.append(Fill(maker.price, qty, maker.order_id, taker.order_id, maker_fee,
                                  taker_fee))
            if not maker.remaining:
                self.book.remove(maker)
        return True

    def cancel(self, account: int, order_id: int) -> Outcome:
        for o in self.book:
            if o.order_id == order_id and o.account == account:
                self.book.remove(o)
                return Outcome(order_id=order_id, canceled=[(order_id, "CANCELED")])
        return Outcome("UNKNOWN_ORDER")

    def amend(self, account: int, order_id: int, new_qty: int | None, new_price: int | None,
              account_stp: str = "expire_taker") -> Outcome:
        """A quantity cut at the same price keeps the order's place; anything else takes it out
        and places it again at the back, under today's fees, where it may match."""
        s = self.spec
        order = next((o for o in self.book if o.order_id == order_id and o.account == account),
                     None)
        if order is None:
            return Outcome("UNKNOWN_ORDER")
        filled = order.qty - order.remaining
        qty = order.qty if new_qty is None else new_qty
        price = order.price if new_price is None else new_price
        if new_qty is not None:
            if not 0 < qty <= MAX_INT:
                return Outcome("INVALID_QUANTITY")
            if qty % s.lot:
                return Outcome("LOT_SIZE")
            if qty < s.min_qty:
                return Outcome("MIN_QUANTITY")
            if qty > s.max_qty:
                return Outcome("MAX_QUANTITY")
        if new_price is not None:
            if not 0 < price <= MAX_INT:
                return Outcome("INVALID_PRICE")
            if price % s.tick:
                return Outcome("TICK_SIZE")
        if qty <= filled:
            return Outcome("INVALID_QUANTITY")
        if (qty, price) == (order.qty, order.price):
            return Outcome("NO_CHANGE")
        remaining = qty - filled
        if price == order.price and qty < order.qty:
            order.qty, order.remaining = qty, remaining
            return Outcome(order_id=order_id, amended=[(order_id, price, qty, remaining, True)])
        others = [o for o in self.book if o is not order and o.is_buy != order.is_buy]
        crosses = any(o.price <= price if order.is_buy else o.price >= price for o in others)
        if crosses and order.post_only:
            return Outcome("POST_ONLY_WOULD_CROSS")
        asset = "quote" if order.is_buy else "base"
        free = self.available(account, asset) + self.hold(order.is_buy, order.price,
                                                          order.remaining, order.taker_cap)
        if self.hold(order.is_buy, price, remaining, s.taker_ppm) > free:
            return Outcome("INSUFFICIENT_FUNDS")
        self.book.remove(order)
        fresh = Resting(order_id, account, order.is_buy, price, remaining, order.client_id,
                        s.taker_ppm, s.maker_ppm, qty, order.post_only, order.stp)
        out = Outcome(order_id=order_id, amended=[(order_id, price, qty, remaining, False)])
        alive = self.match(fresh, order.stp if order.stp is not None else account_stp, out)
        if alive and fresh.remaining:
            self.book.append(fresh)
        return out
