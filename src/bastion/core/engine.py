"""The engine: a single-threaded, deterministic state machine over commands.

``apply`` never raises: a refused command yields exactly one ``Rejected`` event and changes
nothing; a broken invariant halts the affected market with a ``GuardTripped`` event instead of
acting on bad state.
"""

from collections.abc import Callable
from hashlib import blake2b
from typing import Any

import msgspec

from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.book import BookSide, OrderBook
from bastion.core.instruments import validate_market
from bastion.core.matching import GuardViolation, execute, match
from bastion.core.modes import MODES, accepts_cancel, accepts_order
from bastion.core.state import STATE_VERSION, Account, Asset, EngineState, Market, Order

PPM = 1_000_000
BPS = 10_000
NO_DEADLINE = 2**63
MAX_CLIENT_ID = 64
STP_MODES = frozenset(("expire_taker", "expire_maker", "expire_both", "none"))


class Refused(Exception):
    """Raised by validation before any mutation; becomes the command's one Rejected event."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _int_in(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def fee_amount(notional: int, rate_ppm: int) -> int:
    """Fees round toward zero, in the customer's favour, so holds can always cover them."""
    if rate_ppm >= 0:
        return notional * rate_ppm // PPM
    return -(notional * -rate_ppm // PPM)


class Engine:
    def __init__(self) -> None:
        self.seq = 0
        self.ts = 0
        self.next_order_id = 1
        self.next_trade_id = 1
        self.assets: dict[str, Asset] = {}
        self.markets: dict[str, Market] = {}
        self.books: dict[str, OrderBook] = {}
        self.accounts: dict[int, Account] = {}
        self.orders: dict[int, Order] = {}
        self.client_ids: dict[tuple[int, str], int] = {}
        self.fees: dict[str, int] = {}
        self.net_deposits: dict[str, int] = {}
        self.deadline = NO_DEADLINE
        self._handlers: dict[type, Callable[[Any, list[E.Event]], None]] = {
            C.PlaceOrder: self._place,
            C.CancelOrder: self._cancel,
            C.AmendOrder: self._amend,
            C.CancelAll: self._cancel_all,
            C.Deposit: self._deposit,
            C.Withdraw: self._withdraw,
            C.AdjustBalance: self._adjust,
            C.SetAccountSTP: self._set_stp,
            C.SetReferencePrice: self._set_ref_price,
            C.SetMarketMode: self._set_mode,
            C.CreateAsset: self._create_asset,
            C.CreateMarket: self._create_market,
            C.UpdateMarket: self._update_market,
        }
        from bastion.core.perp.engine import PerpEngine  # late: perp imports this module

        #: perpetual markets: ledger, oracle, funding, liquidations; registers its handlers
        self.perp: PerpEngine = PerpEngine(self)

    # ------------------------------------------------------------------ entry point

    def apply(self, cmd: C.Command) -> list[E.Event]:
        """Apply one sequenced command; returns its events. Never raises."""
        seq = cmd.seq
        ts = cmd.ts
        if type(seq) is not int or seq <= self.seq or type(ts) is not int or ts < self.ts:
            return [
                E.Rejected(
                    seq=seq if type(seq) is int else 0,
                    ts=ts if type(ts) is int else 0,
                    code=X.SEQUENCE,
                    message=f"command seq/ts must increase past seq={self.seq} ts={self.ts}",
                    command=type(cmd).__name__,
                )
            ]
        self.seq = seq
        self.ts = ts
        out: list[E.Event] = []
        if ts >= self.deadline:
            self._end_recovery(out)
        handler = self._handlers.get(type(cmd))
        try:
            if handler is None:
                raise Refused(X.INVALID_ARGUMENT, f"unknown command {type(cmd).__name__}")
            handler(cmd, out)
        except Refused as r:
            out.append(
                E.Rejected(
                    seq=seq,
                    ts=ts,
                    code=r.code,
                    message=r.message,
                    command=type(cmd).__name__,
                    account=_account_of(cmd),
                    client_id=_client_id_of(cmd),
                )
            )
        except GuardViolation as g:
            self._trip(g.market, g.guard, g.detail, out)
        except Exception as exc:  # a defect: stop the market rather than continue on bad state
            market = getattr(cmd, "market", "")
            self._trip(market if isinstance(market, str) else "", "internal", repr(exc), out)
            out.append(
                E.Rejected(seq=seq, ts=ts, code=X.INTERNAL_ERROR, message=repr(exc),
                           command=type(cmd).__name__)
            )
        return out

    def _trip(self, market: str, guard: str, detail: str, out: list[E.Event]) -> None:
        out.append(E.GuardTripped(seq=self.seq, ts=self.ts, market=market, guard=guard,
                                  detail=detail))
        mkt = self.markets.get(market)
        if mkt is not None and mkt.mode != "halted":
            out.append(E.ModeChanged(seq=self.seq, ts=self.ts, market=market, old=mkt.mode,
                                     new="halted", reason=f"guard {guard}: {detail}"))
            mkt.mode = "halted"
            mkt.mode_reason = f"guard {guard}"
            mkt.mode_until = 0
            self._recompute_deadline()

    # ------------------------------------------------------------------ lookups

    def _market(self, market: object) -> Market:
        mkt = self.markets.get(market) if isinstance(market, str) else None
        if mkt is None:
            raise Refused(X.UNKNOWN_MARKET, f"unknown market {market!r}")
        return mkt

    def _account(self, account: object) -> Account:
        acct = self.accounts.get(account) if type(account) is int else None
        if acct is None:
            raise Refused(X.UNKNOWN_ACCOUNT, f"unknown account {account!r}")
        return acct

    def _asset(self, asset: object) -> Asset:
        a = self.assets.get(asset) if isinstance(asset, str) else None
        if a is None:
            raise Refused(X.UNKNOWN_ASSET, f"unknown asset {asset!r}")
        return a

    def _find_order(self, account: int, market: str, order_id: object, client_id: object) -> Order:
        if type(order_id) is not int or not isinstance(client_id, str):
            raise Refused(X.INVALID_ARGUMENT, "order_id must be an integer, client_id a string")
        if order_id:
            order = self.orders.get(order_id)
        elif client_id:
            oid = self.client_ids.get((account, client_id))
            order = self.orders.get(oid) if oid is not None else None
        else:
            raise Refused(X.INVALID_ARGUMENT, "give order_id or client_id")
        if order is None or order.account != account or order.market != market:
            raise Refused(X.UNKNOWN_ORDER, f"no open order {order_id or client_id!r} "
                                           f"for account {account} in {market}")
        return order

    # ------------------------------------------------------------------ holds and funds

    def hold_for(self, mkt: Market, is_buy: bool, price: int, qty: int, fee_ppm: int) -> int:
        """Funds an order must reserve: base qty for a sell; for a buy the notional at its limit
        rounded up plus the worst fee. Shrinks by at least each fill's cost (see README)."""
        if not is_buy:
            return qty
        notional = -(-price * qty // mkt.price_div)
        return notional + (notional * fee_ppm // PPM if fee_ppm > 0 else 0)

    def _forget(self, order: Order) -> None:
        del self.orders[order.order_id]
        if order.client_id:
            self.client_ids.pop((order.account, order.client_id), None)

    def _close_order(self, order: Order, mkt: Market, side: BookSide | None, reason: str,
                     out: list[E.Event]) -> None:
        """Remove an open order (from the book if resting), release its hold, emit the event."""
        if side is not None:
            side.remove(order)
        account = order.account
        out.append(E.OrderCanceled(order.order_id, account, order.market, order.remaining,
                                   reason, seq=self.seq, ts=self.ts))
        if mkt.kind != "spot":
            self.perp.release(order)  # margin hold, not assets
        hold = order.hold
        if hold:
            acct = self.accounts[account]
            asset = mkt.quote if order.side == "buy" else mkt.base
            acct.held[asset] -= hold
            available = acct.available
            available[asset] = available.get(asset, 0) + hold
            order.hold = 0
        del self.orders[order.order_id]
        if order.client_id:
            self.client_ids.pop((account, order.client_id), None)

    # ------------------------------------------------------------------ orders

    def _validate_qty(self, mkt: Market, qty: object) -> int:
        if not _int_in(qty, 1, X.MAX_INT):
            raise Refused(X.INVALID_QUANTITY, f"quantity must be a positive integer, got {qty!r}")
        assert isinstance(qty, int)
        if qty % mkt.lot_size:
            raise Refused(X.LOT_SIZE, f"quantity {qty} is not a multiple of lot size "
                                      f"{mkt.lot_size}")
        if qty < mkt.min_qty:
            raise Refused(X.MIN_QUANTITY, f"quantity {qty} below minimum {mkt.min_qty}")
        if qty > mkt.max_qty:
            raise Refused(X.MAX_QUANTITY, f"quantity {qty} above maximum {mkt.max_qty}")
        return qty

    def _validate_price(self, mkt: Market, price: object) -> int:
        if not _int_in(price, 1, X.MAX_INT):
            raise Refused(X.INVALID_PRICE, f"price must be a positive integer, got {price!r}")
        assert isinstance(price, int)
        if price % mkt.tick_size:
            raise Refused(X.TICK_SIZE, f"price {price} is not a multiple of tick size "
                                       f"{mkt.tick_size}")
        return price

    def _check_ref_band(self, mkt: Market, is_buy: bool, price: int) -> None:
        """In post-only and recovery modes, refuse orders priced far through the fair price
        (the Paradex 2026 fix: aggressive post-only orders moved prices during reopening)."""
        ref = mkt.ref_price or mkt.last_price
        if not ref:
            return
        band = mkt.ref_band_bps
        if is_buy and price * BPS > ref * (BPS + band):
            raise Refused(X.PRICE_BAND, f"buy at {price} is more than {band} bps above "
                                        f"reference {ref}")
        if not is_buy and price * BPS < ref * (BPS - band):
            raise Refused(X.PRICE_BAND, f"sell at {price} is more than {band} bps below "
                                        f"reference {ref}")

    def _place(self, cmd: C.PlaceOrder, out: list[E.Event]) -> None:
        """Validate (no mutation until every check passed), reserve funds, match, rest."""
        market = cmd.market
        mkt = self.markets.get(market) if type(market) is str else None
        if mkt is None:
            raise Refused(X.UNKNOWN_MARKET, f"unknown market {market!r}")
        if mkt.kind != "spot":
            return self.perp.place_cmd(cmd, out)
        acct, is_buy, qty, price, tif, book, best, crosses = self.order_terms(mkt, cmd)
        taker_ppm = mkt.taker_fee_ppm
        if is_buy:
            hold_asset = mkt.quote
            notional = -(-price * qty // mkt.price_div)
            hold = notional + notional * taker_ppm // PPM if taker_ppm > 0 else notional
        else:
            hold_asset = mkt.base
            hold = qty
        available = acct.available.get(hold_asset, 0)
        if hold > available:
            if cmd.order_type == "market" and is_buy:
                qty = self._affordable(mkt, price, available, qty)
                hold = self.hold_for(mkt, True, price, qty, taker_ppm)
            else:
                raise Refused(X.INSUFFICIENT_FUNDS, f"order needs {hold} {hold_asset}, "
                                                    f"available {available}")
        account = acct.account
        stp = cmd.stp
        stp_mode = stp if stp is not None else acct.stp
        if tif == "FOK":
            self.check_fok(book, is_buy, price, qty, account, stp_mode, crosses)
        # ---- accepted: from here on state changes
        oid = self.next_order_id
        self.next_order_id = oid + 1
        ts = self.ts
        side = cmd.side
        post_only = cmd.post_only
        client_id = cmd.client_id
        order = Order(oid, account, market, side, price, qty, qty, hold, ts, tif, post_only,
                      client_id, stp, mkt.maker_fee_ppm, taker_ppm)
        acct.available[hold_asset] = available - hold
        held = acct.held
        held[hold_asset] = held.get(hold_asset, 0) + hold
        self.orders[oid] = order
        if client_id:
            self.client_ids[(account, client_id)] = oid
        out.append(E.OrderAccepted(oid, account, market, side, price, qty, cmd.order_type, tif,
                                   post_only, client_id, seq=self.seq, ts=ts))
        if not crosses and tif == "GTC":
            book.side(is_buy).add(order)
            return
        self._execute(mkt, book, order, stp_mode, crosses, out)

    def order_terms(self, mkt: Market, cmd: C.PlaceOrder, band_limit: int = 0,
                    min_notional: bool = True
                    ) -> tuple[Account, bool, int, int, str, OrderBook, int | None, bool]:
        """The checks every market kind shares, in one place: account, side, quantity grid,
        flags, client id, mode, limit price or a market order's protective limit, reference
        band, post-only. ``band_limit`` (perpetuals) is the furthest price allowed on this
        side. Returns (account, is_buy, qty, price, tif, book, best opposite, crosses).

        This is the hot path: regular values pass inline checks, irregular ones fall through
        to the validators that explain them."""
        account = cmd.account
        acct = self.accounts.get(account) if type(account) is int else None
        if acct is None:
            raise Refused(X.UNKNOWN_ACCOUNT, f"unknown account {account!r}")
        side = cmd.side
        if side == "buy":
            is_buy = True
        elif side == "sell":
            is_buy = False
        else:
            raise Refused(X.INVALID_ARGUMENT, f"side must be buy or sell, got {side!r}")
        qty = cmd.qty
        if type(qty) is not int or not 0 < qty <= mkt.max_qty or qty % mkt.lot_size \
                or qty < mkt.min_qty:
            qty = self._validate_qty(mkt, qty)
        post_only = cmd.post_only
        client_id = cmd.client_id
        stp = cmd.stp
        if post_only is not False and post_only is not True:
            raise Refused(X.INVALID_ARGUMENT, "post_only must be a boolean")
        if client_id:
            if type(client_id) is not str or len(client_id) > MAX_CLIENT_ID:
                raise Refused(X.INVALID_ARGUMENT, f"client_id must be a string of at most "
                                                  f"{MAX_CLIENT_ID} characters")
            if (account, client_id) in self.client_ids:
                raise Refused(X.DUPLICATE_CLIENT_ID, f"client_id {client_id!r} is already used "
                                                     "by an open order")
        elif client_id != "":
            raise Refused(X.INVALID_ARGUMENT, "client_id must be a string")
        if stp is not None and stp not in STP_MODES:
            raise Refused(X.INVALID_ARGUMENT, f"unknown self-trade prevention mode {stp!r}")
        mode = mkt.mode
        market = mkt.market
        if mode != "open" and not accepts_order(mode, post_only):
            raise Refused(X.MARKET_MODE, f"market {market} is {mode}: "
                          + ("only post-only orders are accepted" if mode in ("post_only",
                             "recovery") else "no new orders are accepted"))
        book = self.books[market]
        best = (book.asks if is_buy else book.bids).best()
        tif = cmd.tif
        order_type = cmd.order_type
        if order_type == "limit":
            price = cmd.price
            if type(price) is not int or not 0 < price <= X.MAX_INT or price % mkt.tick_size:
                price = self._validate_price(mkt, price)
            if tif != "GTC" and tif != "IOC" and tif != "FOK":
                raise Refused(X.INVALID_ARGUMENT, f"time in force must be GTC, IOC or FOK, "
                                                  f"got {tif!r}")
            if post_only and tif != "GTC":
                raise Refused(X.INVALID_ARGUMENT, "post-only orders must be GTC")
            if min_notional and price * qty // mkt.price_div < mkt.min_notional:
                raise Refused(X.MIN_NOTIONAL, f"notional {price * qty // mkt.price_div} below "
                                              f"minimum {mkt.min_notional}")
            if band_limit and ((price > band_limit) if is_buy else (price < band_limit)):
                raise Refused(X.PRICE_BAND, f"{side} at {price} is outside the price band "
                                            f"(limit {band_limit})")
        elif order_type == "market":
            if post_only or cmd.price:
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
                                              f"got {order_type!r}")
        if mode != "open":
            self._check_ref_band(mkt, is_buy, price)
        crosses = best is not None and (best <= price if is_buy else best >= price)
        if post_only and crosses:
            raise Refused(X.POST_ONLY_WOULD_CROSS, f"post-only {side} at {price} would take "
                                                   f"liquidity at {best}")
        return acct, is_buy, qty, price, tif, book, best, crosses

    def check_fok(self, book: OrderBook, is_buy: bool, price: int, qty: int, account: int,
                  stp_mode: str, crosses: bool) -> None:
        if not (crosses and self._fok_fillable(book.asks if is_buy else book.bids, is_buy,
                                                price, qty, account, stp_mode)):
            raise Refused(X.FOK_NOT_FILLABLE, f"fill-or-kill {'buy' if is_buy else 'sell'} "
                                              f"{qty} at {price} cannot fill completely")

    def amend_terms(self, mkt: Market, cmd: C.AmendOrder) -> tuple[Order, int, int, bool]:
        """The amend checks every market kind shares: the order, the new price and quantity on
        their grids, something changes, the mode allows it. Returns (order, new price, new
        total quantity, shrink-only) where shrink-only (same price, less quantity) keeps time
        priority and is all ``cancel_only`` accepts."""
        order = self._find_order(cmd.account, mkt.market, cmd.order_id, cmd.client_id)
        filled = order.qty - order.remaining
        new_qty = order.qty if cmd.new_qty is None else self._validate_qty(mkt, cmd.new_qty)
        new_price = order.price if cmd.new_price is None else self._validate_price(
            mkt, cmd.new_price)
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

    def reprice_crosses(self, mkt: Market, order: Order, new_price: int) -> bool:
        """Whether a re-entered order would take liquidity; refused where it must not (post-only
        orders, restricted modes) and outside the reference band in restricted modes."""
        is_buy = order.side == "buy"
        if mkt.mode != "open":
            self._check_ref_band(mkt, is_buy, new_price)
        book = self.books[mkt.market]
        best = (book.asks if is_buy else book.bids).best()
        crosses = best is not None and (best <= new_price if is_buy else best >= new_price)
        if crosses and (order.post_only or mkt.mode != "open"):
            raise Refused(X.POST_ONLY_WOULD_CROSS, f"amended price {new_price} would take "
                                                   f"liquidity at {best}")
        return crosses

    def _affordable(self, mkt: Market, price: int, available: int, want: int) -> int:
        """Largest lot-multiple quantity a market buy bounded at ``price`` can pay for."""
        lot = mkt.lot_size
        taker_ppm = mkt.taker_fee_ppm
        qty = available * mkt.price_div * PPM // (price * (PPM + max(taker_ppm, 0)))
        qty = min(qty, want) // lot * lot
        while qty > 0 and self.hold_for(mkt, True, price, qty, taker_ppm) > available:
            qty -= lot
        if qty < mkt.min_qty:
            raise Refused(X.INSUFFICIENT_FUNDS, f"available {available} {mkt.quote} buys less "
                                                "than the minimum quantity")
        return qty

    def _execute(self, mkt: Market, book: OrderBook, order: Order, stp_mode: str,
                 crosses: bool, out: list[E.Event]) -> None:
        execute(mkt, book, order, crosses, out,
                lambda: match(mkt, book, order, stp_mode, out, self._fill, self._close_order,
                              self._forget),
                self._close_order, self._forget, self.orders.__contains__)

    def _fok_fillable(self, opposite: BookSide, is_buy: bool, limit: int, qty: int,
                      account: int, stp_mode: str) -> bool:
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

    def _fill(self, mkt: Market, maker: Order, taker: Order, price: int, qty: int,
              out: list[E.Event]) -> None:
        notional = price * qty // mkt.price_div
        taker_fee = fee_amount(notional, mkt.taker_fee_ppm)
        maker_rate = mkt.maker_fee_ppm
        cap = maker.maker_cap if maker.maker_cap > 0 else 0  # what the maker's hold covered
        if maker_rate > cap:
            maker_rate = cap
        maker_fee = fee_amount(notional, maker_rate)
        if taker.side == "buy":
            buyer, buyer_fee, seller, seller_fee = taker, taker_fee, maker, maker_fee
        else:
            buyer, buyer_fee, seller, seller_fee = maker, maker_fee, taker, taker_fee
        base = mkt.base
        quote = mkt.quote
        accounts = self.accounts
        # buyer: pay notional + fee out of the order's hold, release what the rest no longer needs
        bacct = accounts[buyer.account]
        cost = notional + buyer_fee
        buyer.remaining -= qty
        keep = self.hold_for(mkt, True, buyer.price, buyer.remaining, buyer.taker_cap)
        release = buyer.hold - cost - keep
        if release < 0:
            raise GuardViolation(mkt.market, "hold", f"order {buyer.order_id} hold "
                                 f"{buyer.hold} cannot cover cost {cost} and keep {keep}")
        bheld = bacct.held
        bheld[quote] -= cost + release
        buyer.hold = keep
        bavail = bacct.available
        bavail[quote] = bavail.get(quote, 0) + release
        bavail[base] = bavail.get(base, 0) + qty
        # seller: deliver base out of the hold, receive notional net of fee
        sacct = accounts[seller.account]
        seller.remaining -= qty
        seller.hold -= qty
        sacct.held[base] -= qty
        savail = sacct.available
        savail[quote] = savail.get(quote, 0) + notional - seller_fee
        fees = self.fees
        fees[quote] = fees.get(quote, 0) + taker_fee + maker_fee
        maker.filled_quote += notional
        taker.filled_quote += notional
        mkt.last_price = price
        tid = self.next_trade_id
        self.next_trade_id = tid + 1
        out.append(E.Trade(seq=self.seq, ts=self.ts, trade_id=tid, market=mkt.market,
                           price=price, qty=qty, taker_side=taker.side,
                           maker_order=maker.order_id, taker_order=taker.order_id,
                           maker_account=maker.account, taker_account=taker.account,
                           maker_fee=maker_fee, taker_fee=taker_fee,
                           maker_remaining=maker.remaining, taker_remaining=taker.remaining))

    def _cancel(self, cmd: C.CancelOrder, out: list[E.Event]) -> None:
        market = cmd.market
        mkt = self.markets.get(market) if type(market) is str else None
        if mkt is None:
            raise Refused(X.UNKNOWN_MARKET, f"unknown market {market!r}")
        if mkt.mode == "closed":
            raise Refused(X.MARKET_MODE, f"market {market} is closed: nothing is accepted")
        order_id = cmd.order_id
        order = self.orders.get(order_id) if type(order_id) is int and order_id else None
        if order is None or order.account != cmd.account or order.market != market:
            order = self._find_order(cmd.account, market, order_id, cmd.client_id)
        book = self.books[market]
        self._close_order(order, mkt, book.bids if order.side == "buy" else book.asks,
                          "CANCELED", out)

    def _cancel_all(self, cmd: C.CancelAll, out: list[E.Event]) -> None:
        account = cmd.account
        market = cmd.market
        if type(account) is not int or not isinstance(market, str):
            raise Refused(X.INVALID_ARGUMENT, "account must be an integer, market a string")
        if account:
            self._account(account)
        elif not market:
            raise Refused(X.INVALID_ARGUMENT, "cancel-all needs an account, a market or both")
        if market:
            mkt = self._market(market)
            if not accepts_cancel(mkt.mode):
                raise Refused(X.MARKET_MODE, f"market {market} is {mkt.mode}")
        victims = sorted(
            (o for o in self.orders.values()
             if (not account or o.account == account) and (not market or o.market == market)
             and accepts_cancel(self.markets[o.market].mode)),
            key=lambda o: o.order_id,
        )
        reason = cmd.reason if isinstance(cmd.reason, str) and cmd.reason else "CANCELED"
        for order in victims:
            m = self.markets[order.market]
            self._close_order(order, m, self.books[m.market].side(order.side == "buy"), reason,
                              out)
        if not victims:
            out.append(E.Rejected(seq=self.seq, ts=self.ts, code=X.UNKNOWN_ORDER,
                                  message="no open orders matched", command="CancelAll",
                                  account=account))

    def _amend(self, cmd: C.AmendOrder, out: list[E.Event]) -> None:
        mkt = self._market(cmd.market)
        if mkt.kind != "spot":
            return self.perp.amend_cmd(cmd, out)
        order, new_price, new_qty, shrink = self.amend_terms(mkt, cmd)
        is_buy = order.side == "buy"
        filled = order.qty - order.remaining
        side = self.books[mkt.market].side(is_buy)
        acct = self.accounts[order.account]
        hold_asset = mkt.quote if is_buy else mkt.base
        new_remaining = new_qty - filled
        if shrink:
            keep = self.hold_for(mkt, is_buy, order.price, new_remaining, order.taker_cap)
            delta = order.remaining - new_remaining
            side.levels[order.price].qty -= delta
            order.remaining = new_remaining
            order.qty = new_qty
            release = order.hold - keep
            order.hold = keep
            acct.held[hold_asset] -= release
            acct.available[hold_asset] = acct.available.get(hold_asset, 0) + release
            out.append(E.OrderAmended(seq=self.seq, ts=self.ts, order_id=order.order_id,
                                      account=order.account, market=mkt.market, price=order.price,
                                      qty=new_qty, remaining=new_remaining, kept_priority=True))
            return
        book = self.books[mkt.market]
        crosses = self.reprice_crosses(mkt, order, new_price)
        taker_ppm = mkt.taker_fee_ppm
        new_hold = self.hold_for(mkt, is_buy, new_price, new_remaining, taker_ppm)
        available = acct.available.get(hold_asset, 0)
        if new_hold > available + order.hold:
            raise Refused(X.INSUFFICIENT_FUNDS, f"amended order needs {new_hold} {hold_asset}, "
                                                f"available {available + order.hold}")
        side.remove(order)
        acct.available[hold_asset] = available + order.hold - new_hold
        acct.held[hold_asset] += new_hold - order.hold
        # a fresh record: the old one may still sit, dead, in its level's deque
        order = msgspec.structs.replace(order, hold=new_hold, price=new_price, qty=new_qty,
                                        remaining=new_remaining, ts=self.ts, live=True,
                                        maker_cap=mkt.maker_fee_ppm, taker_cap=taker_ppm)
        self.orders[order.order_id] = order
        out.append(E.OrderAmended(seq=self.seq, ts=self.ts, order_id=order.order_id,
                                  account=order.account, market=mkt.market, price=new_price,
                                  qty=new_qty, remaining=new_remaining, kept_priority=False))
        stp_mode = order.stp if order.stp is not None else acct.stp
        self._execute(mkt, book, order, stp_mode, crosses, out)

    # ------------------------------------------------------------------ funds

    def _amount(self, value: object, what: str) -> int:
        if not _int_in(value, 1, X.MAX_INT):
            raise Refused(X.INVALID_AMOUNT, f"{what} must be a positive integer, got {value!r}")
        assert isinstance(value, int)
        return value

    def _deposit(self, cmd: C.Deposit, out: list[E.Event]) -> None:
        self._asset(cmd.asset)
        amount = self._amount(cmd.amount, "amount")
        if not _int_in(cmd.account, 1, X.MAX_INT):
            raise Refused(X.INVALID_ARGUMENT, f"account must be a positive integer, "
                                              f"got {cmd.account!r}")
        if self.net_deposits.get(cmd.asset, 0) + amount > X.MAX_INT:
            raise Refused(X.INVALID_AMOUNT, f"total {cmd.asset} supply would exceed 2**62 units")
        acct = self.accounts.get(cmd.account)
        if acct is None:
            acct = self.accounts[cmd.account] = Account(account=cmd.account, available={},
                                                        held={})
        self._credit(acct, cmd.asset, amount, "deposit", cmd.reason, out)

    def _withdraw(self, cmd: C.Withdraw, out: list[E.Event]) -> None:
        self._asset(cmd.asset)
        acct = self._account(cmd.account)
        amount = self._amount(cmd.amount, "amount")
        if acct.available.get(cmd.asset, 0) < amount:
            raise Refused(X.INSUFFICIENT_FUNDS, f"withdrawal of {amount} {cmd.asset} exceeds "
                                                f"available {acct.available.get(cmd.asset, 0)}")
        self._credit(acct, cmd.asset, -amount, "withdrawal", cmd.reason, out)

    def _adjust(self, cmd: C.AdjustBalance, out: list[E.Event]) -> None:
        self._asset(cmd.asset)
        acct = self._account(cmd.account)
        if not _int_in(cmd.delta, -X.MAX_INT, X.MAX_INT) or cmd.delta == 0:
            raise Refused(X.INVALID_AMOUNT, f"delta must be a non-zero integer, got {cmd.delta!r}")
        if not isinstance(cmd.reason, str) or not cmd.reason.strip():
            raise Refused(X.INVALID_ARGUMENT, "a manual adjustment needs a reason")
        if acct.available.get(cmd.asset, 0) + cmd.delta < 0:
            raise Refused(X.INSUFFICIENT_FUNDS, "adjustment would make the balance negative")
        self._credit(acct, cmd.asset, cmd.delta, "adjustment", cmd.reason, out)

    def _credit(self, acct: Account, asset: str, delta: int, kind: str, reason: str,
                out: list[E.Event]) -> None:
        """The only way money enters or leaves. Total supply per asset stays below 2**62, so
        every balance and sum fits the int64 snapshot encoding."""
        supply = self.net_deposits.get(asset, 0) + delta
        if supply > X.MAX_INT:
            raise Refused(X.INVALID_AMOUNT, f"total {asset} supply would exceed 2**62 units")
        acct.available[asset] = acct.available.get(asset, 0) + delta
        self.net_deposits[asset] = self.net_deposits.get(asset, 0) + delta
        out.append(E.BalanceChanged(seq=self.seq, ts=self.ts, account=acct.account, asset=asset,
                                    delta=delta, kind=kind,
                                    reason=reason if isinstance(reason, str) else ""))

    def _set_stp(self, cmd: C.SetAccountSTP, out: list[E.Event]) -> None:
        acct = self._account(cmd.account)
        if cmd.stp not in STP_MODES:
            raise Refused(X.INVALID_ARGUMENT, f"unknown self-trade prevention mode {cmd.stp!r}")
        acct.stp = cmd.stp
        out.append(E.AccountUpdated(seq=self.seq, ts=self.ts, account=acct.account, stp=cmd.stp))

    # ------------------------------------------------------------------ markets and modes

    def _create_asset(self, cmd: C.CreateAsset, out: list[E.Event]) -> None:
        if not isinstance(cmd.asset, str) or not 1 <= len(cmd.asset) <= 16 \
                or not cmd.asset.isalnum():
            raise Refused(X.INVALID_ARGUMENT, "asset must be 1-16 letters or digits")
        if not _int_in(cmd.decimals, 0, 18):
            raise Refused(X.INVALID_ARGUMENT, "decimals must be an integer in 0..18")
        if cmd.asset in self.assets:
            raise Refused(X.ASSET_EXISTS, f"asset {cmd.asset} exists")
        self.assets[cmd.asset] = Asset(asset=cmd.asset, decimals=cmd.decimals)
        out.append(E.AssetCreated(seq=self.seq, ts=self.ts, asset=cmd.asset,
                                  decimals=cmd.decimals))

    def _create_market(self, cmd: C.CreateMarket, out: list[E.Event]) -> None:
        if isinstance(cmd.market, str) and cmd.market in self.markets:
            raise Refused(X.MARKET_EXISTS, f"market {cmd.market} exists")
        base = self._asset(cmd.base)
        quote = self._asset(cmd.quote)
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
        self.markets[mkt.market] = mkt
        self.books[mkt.market] = OrderBook(mkt.market)
        out.append(E.MarketCreated(seq=self.seq, ts=self.ts, market=mkt.market,
                                   reason=cmd.reason))

    def _update_market(self, cmd: C.UpdateMarket, out: list[E.Event]) -> None:
        mkt = self._market(cmd.market)
        changes: dict[str, int] = {}
        for name in ("tick_size", "lot_size", "min_qty", "max_qty", "min_notional",
                     "maker_fee_ppm", "taker_fee_ppm", "market_band_bps", "ref_band_bps"):
            value = getattr(cmd, name)
            if value is not None and value != getattr(mkt, name):
                changes[name] = value
        if not changes:
            raise Refused(X.NO_CHANGE, "update changes nothing")
        merged = msgspec.structs.replace(mkt, **changes)
        spec = C.CreateMarket(market=mkt.market, base=mkt.base, quote=mkt.quote,
                              price_decimals=mkt.price_decimals, tick_size=merged.tick_size,
                              lot_size=merged.lot_size, min_qty=merged.min_qty,
                              max_qty=merged.max_qty, min_notional=merged.min_notional,
                              maker_fee_ppm=merged.maker_fee_ppm,
                              taker_fee_ppm=merged.taker_fee_ppm,
                              market_band_bps=merged.market_band_bps,
                              ref_band_bps=merged.ref_band_bps)
        problem = validate_market(spec, self.assets[mkt.base].decimals,
                                  self.assets[mkt.quote].decimals)
        if problem:
            raise Refused(X.INVALID_MARKET_SPEC, problem)
        for name, value in changes.items():
            setattr(mkt, name, value)
        out.append(E.MarketUpdated(seq=self.seq, ts=self.ts, market=mkt.market, changes=changes,
                                   reason=cmd.reason if isinstance(cmd.reason, str) else ""))

    def _set_ref_price(self, cmd: C.SetReferencePrice, out: list[E.Event]) -> None:
        mkt = self._market(cmd.market)
        if not _int_in(cmd.price, 1, X.MAX_INT):
            raise Refused(X.INVALID_PRICE, f"reference price must be a positive integer, "
                                           f"got {cmd.price!r}")
        mkt.ref_price = cmd.price
        out.append(E.ReferencePriceSet(seq=self.seq, ts=self.ts, market=mkt.market,
                                       price=cmd.price))

    def _set_mode(self, cmd: C.SetMarketMode, out: list[E.Event]) -> None:
        mkt = self._market(cmd.market)
        mode = cmd.mode
        if mode not in MODES:
            raise Refused(X.INVALID_ARGUMENT, f"unknown market mode {mode!r}; one of "
                                              f"{', '.join(MODES)}")
        if not isinstance(cmd.reason, str) or not cmd.reason.strip():
            raise Refused(X.INVALID_ARGUMENT, "a mode change needs a reason")
        until = cmd.until_ts
        if mode == "recovery":
            if not _int_in(until, self.ts + 1, X.MAX_INT):
                raise Refused(X.INVALID_ARGUMENT, "recovery needs until_ts after the command's "
                                                  "timestamp")
        elif until:
            raise Refused(X.INVALID_ARGUMENT, "until_ts applies only to recovery")
        if mode == mkt.mode and until == mkt.mode_until:
            raise Refused(X.NO_CHANGE, f"market {mkt.market} is already {mode}")
        out.append(E.ModeChanged(seq=self.seq, ts=self.ts, market=mkt.market, old=mkt.mode,
                                 new=mode, reason=cmd.reason, until_ts=until))
        if mode == "closed":
            book = self.books[mkt.market]
            for order in sorted((o for o in self.orders.values() if o.market == mkt.market),
                                key=lambda o: o.order_id):
                self._close_order(order, mkt, book.side(order.side == "buy"), "MARKET_CLOSED",
                                  out)
        mkt.mode = mode
        mkt.mode_reason = cmd.reason
        mkt.mode_until = until
        self._recompute_deadline()
        if mkt.kind != "spot":
            self.perp.mode_changed(mkt, out)

    def _end_recovery(self, out: list[E.Event]) -> None:
        """Timed return to ``open``: happens on the first command stamped past the deadline."""
        for mkt in sorted(self.markets.values(), key=lambda m: m.market):
            if mkt.mode == "recovery" and mkt.mode_until <= self.ts:
                out.append(E.ModeChanged(seq=self.seq, ts=self.ts, market=mkt.market,
                                         old="recovery", new="open",
                                         reason="recovery protection period ended"))
                mkt.mode = "open"
                mkt.mode_reason = "recovery protection period ended"
                mkt.mode_until = 0
        self._recompute_deadline()

    def _recompute_deadline(self) -> None:
        self.deadline = min((m.mode_until for m in self.markets.values()
                             if m.mode == "recovery"), default=NO_DEADLINE)

    # ------------------------------------------------------------------ state

    def export_state(self) -> EngineState:
        """The complete state in a canonical order (hash input and snapshot payload)."""
        orders: list[Order] = []
        for name in sorted(self.books):
            book = self.books[name]
            orders.extend(book.bids.orders_in_priority())
            orders.extend(book.asks.orders_in_priority())
        accounts = [
            Account(account=a.account, available=dict(sorted(a.available.items())),
                    held=dict(sorted(a.held.items())), stp=a.stp)
            for _, a in sorted(self.accounts.items())
        ]
        return EngineState(
            version=STATE_VERSION, seq=self.seq, ts=self.ts, next_order_id=self.next_order_id,
            next_trade_id=self.next_trade_id,
            assets=[self.assets[k] for k in sorted(self.assets)],
            markets=[self.markets[k] for k in sorted(self.markets)],
            accounts=accounts, orders=orders, fees=dict(sorted(self.fees.items())),
            net_deposits=dict(sorted(self.net_deposits.items())),
            perp=self.perp.export(),
        )

    @classmethod
    def from_state(cls, state: EngineState, *, copy: bool = True) -> "Engine":
        """Rebuild an engine; continuing from it equals never having stopped.

        ``export_state`` shares records with the live engine, so by default the state is
        deep-copied first; a freshly decoded snapshot can be adopted as is (``copy=False``),
        which saves seconds on a large book."""
        eng = cls()
        if copy:
            state = msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=EngineState)
        eng.seq, eng.ts = state.seq, state.ts
        eng.next_order_id, eng.next_trade_id = state.next_order_id, state.next_trade_id
        eng.assets = {a.asset: a for a in state.assets}
        eng.markets = {m.market: m for m in state.markets}
        eng.books = {m.market: OrderBook(m.market) for m in state.markets}
        eng.accounts = {a.account: a for a in state.accounts}
        for order in state.orders:
            eng.orders[order.order_id] = order
            if order.client_id:
                eng.client_ids[(order.account, order.client_id)] = order.order_id
            eng.books[order.market].side(order.side == "buy").add(order)
        eng.fees = state.fees
        eng.net_deposits = state.net_deposits
        eng._recompute_deadline()
        eng.perp.restore(state.perp)
        return eng

    def state_hash(self) -> str:
        return blake2b(msgspec.msgpack.encode(self.export_state()), digest_size=32).hexdigest()

    def check_invariants(self) -> list[str]:
        """Full O(state) audit: funds conserved per asset, holds match open orders, no negative
        balance, books uncrossed and FIFO. Tests and operators call it; the hot path checks the
        cheap local forms of the same rules."""
        problems: list[str] = []
        totals: dict[str, int] = {}
        expected_held: dict[tuple[int, str], int] = {}
        for order in self.orders.values():
            mkt = self.markets[order.market]
            if mkt.kind != "spot":
                continue  # margin holds: audited by perp.check_invariants
            is_buy = order.side == "buy"
            asset = mkt.quote if is_buy else mkt.base
            key = (order.account, asset)
            expected_held[key] = expected_held.get(key, 0) + order.hold
            want = self.hold_for(mkt, is_buy, order.price, order.remaining, order.taker_cap)
            if order.hold != want:
                problems.append(f"order {order.order_id} holds {order.hold}, needs {want}")
        for acct in self.accounts.values():
            for asset, value in acct.available.items():
                if value < 0:
                    problems.append(f"account {acct.account} available {asset} = {value}")
                totals[asset] = totals.get(asset, 0) + value
            for asset, value in acct.held.items():
                totals[asset] = totals.get(asset, 0) + value
                if value != expected_held.get((acct.account, asset), 0):
                    problems.append(f"account {acct.account} held {asset} = {value}, orders "
                                    f"hold {expected_held.get((acct.account, asset), 0)}")
        for asset, amount in self.perp.ledger_totals().items():
            totals[asset] = totals.get(asset, 0) + amount  # margin + insurance - position cost
        for asset in set(totals) | set(self.net_deposits) | set(self.fees):
            have = totals.get(asset, 0) + self.fees.get(asset, 0)
            if have != self.net_deposits.get(asset, 0):
                problems.append(f"{asset}: balances + fees = {have}, net deposits = "
                                f"{self.net_deposits.get(asset, 0)}")
        for name, book in self.books.items():
            if book.is_crossed():
                problems.append(f"{name} crossed: {book.bids.best()} >= {book.asks.best()}")
            for side in (book.bids, book.asks):
                for price, level in side.levels.items():
                    live = level.live_orders()
                    if [o.ts for o in live] != sorted(o.ts for o in live):
                        problems.append(f"{name} level {price} not FIFO")
                    if sum(o.remaining for o in live) != level.qty or len(live) != level.count:
                        problems.append(f"{name} level {price} totals disagree")
                    if not live:
                        problems.append(f"{name} empty level {price} kept")
        problems.extend(self.perp.check_invariants())
        return problems


def _account_of(cmd: object) -> int:
    account = getattr(cmd, "account", 0)
    return account if type(account) is int else 0


def _client_id_of(cmd: object) -> str:
    client_id = getattr(cmd, "client_id", "")
    return client_id if isinstance(client_id, str) else ""
