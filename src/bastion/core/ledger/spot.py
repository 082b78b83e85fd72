"""Spot ledger: available and held balances per account and asset.

A buy holds quote (its notional at the limit, rounded up, plus the worst taker fee), a sell holds
base; a fill pays out of the holds and releases what the rest of the order no longer needs, so a
hold never has to be topped up (``rules.spot_hold``).
"""

from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.book import BookSide
from bastion.core.ledger.base import Ledger
from bastion.core.matching import Clip
from bastion.core.records import Order
from bastion.core.rules import PPM, GuardViolation, Refused, ceil_div, spot_hold
from bastion.core.state import Account, Market
from bastion.core.venue import Venue


class SpotLedger(Ledger):
    def __init__(self, v: Venue) -> None:
        super().__init__(False)
        self.v = v

    def account_of(self, order: Order) -> Account:
        acct = order.acct
        return acct if acct is not None else self.v.accounts[order.account]

    # ------------------------------------------------------------------ order entry

    def entry(self, mkt: Market, side: object, reduce_only: object) -> tuple[int, bool]:
        return 0, True

    def reserve_terms(self, acct: Account, mkt: Market, is_buy: bool, qty: int, price: int,
                      market_order: bool, reduce_only: bool) -> tuple[int, int]:
        taker_ppm = mkt.taker_fee_ppm
        if is_buy:
            hold_asset = mkt.quote
            notional = ceil_div(price * qty, mkt.price_div)
            hold = notional + notional * taker_ppm // PPM if taker_ppm > 0 else notional
        else:
            hold_asset = mkt.base
            hold = qty
        available = acct.available.get(hold_asset, 0)
        if hold > available:
            if market_order and is_buy:
                qty = self._affordable(mkt, price, available, qty)
                hold = spot_hold(mkt, True, price, qty, taker_ppm)
            else:
                raise Refused(X.INSUFFICIENT_FUNDS, f"order needs {hold} {hold_asset}, "
                                                    f"available {available}",
                              field="available", limit=available, value=hold)
        return qty, hold

    def _affordable(self, mkt: Market, price: int, available: int, want: int) -> int:
        """Largest lot-multiple quantity a market buy bounded at ``price`` can pay for."""
        lot = mkt.lot_size
        taker_ppm = mkt.taker_fee_ppm
        qty = available * mkt.price_div * PPM // (price * (PPM + max(taker_ppm, 0)))
        qty = min(qty, want) // lot * lot
        while qty > 0 and spot_hold(mkt, True, price, qty, taker_ppm) > available:
            qty -= lot
        if qty < mkt.min_qty:
            raise Refused(X.INSUFFICIENT_FUNDS, f"available {available} {mkt.quote} buys less "
                                                "than the minimum quantity")
        return qty

    def reserve(self, mkt: Market, order: Order, reduce_only: bool) -> bool:
        hold = order.hold
        asset = mkt.quote if order.side == "buy" else mkt.base
        acct = self.account_of(order)
        available = acct.available
        available[asset] = available[asset] - hold  # native arithmetic (``-=`` is generic)
        held = acct.held
        held[asset] = held.get(asset, 0) + hold
        return False  # reduce-only means nothing without a position

    # ------------------------------------------------------------------ fills

    def settle_fill(self, mkt: Market, maker: Order, taker: Order, price: int, qty: int,
                    notional: int, maker_fee: int, taker_fee: int) -> None:
        if taker.side == "buy":
            buyer, buyer_fee, seller, seller_fee = taker, taker_fee, maker, maker_fee
        else:
            buyer, buyer_fee, seller, seller_fee = maker, maker_fee, taker, taker_fee
        base = mkt.base
        quote = mkt.quote
        # buyer: pay notional + fee out of the order's hold, release what the rest no longer needs
        bacct = self.account_of(buyer)
        cost = notional + buyer_fee
        keep = spot_hold(mkt, True, buyer.price, buyer.remaining, buyer.taker_cap)
        release = buyer.hold - cost - keep
        if release < 0:
            raise GuardViolation(mkt.market, "hold", f"order {buyer.order_id} hold "
                                 f"{buyer.hold} cannot cover cost {cost} and keep {keep}")
        bheld = bacct.held
        bheld[quote] = bheld[quote] - (cost + release)
        buyer.hold = keep
        bavail = bacct.available
        bavail[quote] = bavail.get(quote, 0) + release
        bavail[base] = bavail.get(base, 0) + qty
        # seller: deliver base out of the hold, receive notional net of fee
        sacct = self.account_of(seller)
        seller.hold -= qty
        sheld = sacct.held
        sheld[base] = sheld[base] - qty
        savail = sacct.available
        savail[quote] = savail.get(quote, 0) + notional - seller_fee

    def clipper(self, mkt: Market, order: Order, opposite: BookSide) -> Clip | None:
        return None

    def release(self, mkt: Market, order: Order) -> None:
        hold = order.hold
        if hold:
            acct = self.account_of(order)
            asset = mkt.quote if order.side == "buy" else mkt.base
            held = acct.held
            held[asset] = held[asset] - hold
            available = acct.available
            available[asset] = available.get(asset, 0) + hold
            order.hold = 0

    # ------------------------------------------------------------------ amend

    def shrink(self, mkt: Market, order: Order, before: int) -> None:
        is_buy = order.side == "buy"
        keep = spot_hold(mkt, is_buy, order.price, order.remaining, order.taker_cap)
        release = order.hold - keep
        order.hold = keep
        acct = self.v.accounts[order.account]
        asset = mkt.quote if is_buy else mkt.base
        held = acct.held
        held[asset] = held[asset] - release
        acct.available[asset] = acct.available.get(asset, 0) + release

    def check_reprice(self, mkt: Market, order: Order, new_price: int) -> None:
        return None

    def amend_terms(self, mkt: Market, order: Order, new_price: int, new_remaining: int
                    ) -> int:
        is_buy = order.side == "buy"
        new_hold = spot_hold(mkt, is_buy, new_price, new_remaining, mkt.taker_fee_ppm)
        asset = mkt.quote if is_buy else mkt.base
        available = self.v.accounts[order.account].available.get(asset, 0) + order.hold
        if new_hold > available:
            raise Refused(X.INSUFFICIENT_FUNDS, f"amended order needs {new_hold} {asset}, "
                                                f"available {available}", field="available",
                          limit=available, value=new_hold)
        return new_hold

    def rehold(self, mkt: Market, order: Order, new_hold: int) -> None:
        asset = mkt.quote if order.side == "buy" else mkt.base
        acct = self.v.accounts[order.account]
        acct.available[asset] = acct.available.get(asset, 0) + order.hold - new_hold
        acct.held[asset] = acct.held.get(asset, 0) + new_hold - order.hold

    def mode_changed(self, mkt: Market, out: list[E.Event]) -> None:
        return None

    # ------------------------------------------------------------------ audit

    def audit(self) -> list[str]:
        """Holds equal what open spot orders need; no negative balance."""
        v = self.v
        problems: list[str] = []
        expected: dict[tuple[int, str], int] = {}
        for order in v.orders.values():
            mkt = v.markets[order.market]
            if mkt.kind != "spot":
                continue
            is_buy = order.side == "buy"
            key = (order.account, mkt.quote if is_buy else mkt.base)
            expected[key] = expected.get(key, 0) + order.hold
            want = spot_hold(mkt, is_buy, order.price, order.remaining, order.taker_cap)
            if order.hold != want:
                problems.append(f"order {order.order_id} holds {order.hold}, needs {want}")
        for acct in v.accounts.values():
            for asset, value in acct.available.items():
                if value < 0:
                    problems.append(f"account {acct.account} available {asset} = {value}")
            for asset, value in acct.held.items():
                if value != expected.get((acct.account, asset), 0):
                    problems.append(f"account {acct.account} held {asset} = {value}, orders "
                                    f"hold {expected.get((acct.account, asset), 0)}")
        return problems

    def totals(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for acct in self.v.accounts.values():
            for asset, value in acct.available.items():
                totals[asset] = totals.get(asset, 0) + value
            for asset, value in acct.held.items():
                totals[asset] = totals.get(asset, 0) + value
        return totals
