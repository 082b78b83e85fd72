"""The state every command handler works on: sequence, ids, assets, markets, books, accounts,
open orders and their indexes, fee pool; lookups that refuse precisely; closing an order; halting
a market on a broken guard.

``Engine`` (engine.py) is this plus dispatch, export, hash and audit. Handlers and ledgers take a
``Venue``, so nothing below the engine imports it.
"""

from typing import Any, Final

from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.book import BookSide, OrderBook
from bastion.core.ledger.base import Ledger
from bastion.core.records import Order
from bastion.core.rules import NO_DEADLINE, Refused
from bastion.core.state import Account, Asset, Market, MigrationLog

#: bound here (``Final``): compiled code calls it without a module attribute lookup each time
OrderCanceled: Final = E.OrderCanceled
#: account numbers below this are also found by position in ``Venue.account_list`` (at most
#: 8 MiB of references, made only as far as the largest number below it in use)
DENSE_ACCOUNTS: Final = 1 << 20


class Venue:
    def __init__(self) -> None:
        self.seq = 0
        self.ts = 0
        #: ``seq`` and ``ts`` as the command carried them (Python ints, set with them by the
        #: engine): the per-order events reuse these objects instead of boxing ``seq`` and
        #: ``ts`` again for each event
        self.seq_box: Any = 0
        self.ts_box: Any = 0
        self.next_order_id = 1
        self.next_trade_id = 1
        self.assets: dict[str, Asset] = {}
        self.markets: dict[str, Market] = {}
        self.books: dict[str, OrderBook] = {}
        self.accounts: dict[int, Account] = {}
        #: the same records by account number, for numbers below ``DENSE_ACCOUNTS`` (None: no
        #: such account), kept by ``add_account``: order entry reads one slot instead of a
        #: dict lookup, whose table slot, entry and key object are three more cold cache
        #: lines when orders spread over many accounts (``find_account``)
        self.account_list: list[Account | None] = []
        self.orders: dict[int, Order] = {}
        #: open orders' ids by account, then client id: keyed by ``(account, client_id)``
        #: tuples, the map would be tracked again by the garbage collector at each insert of a
        #: fresh tuple after a full collection untracked it, and walked whole by the next ones
        self.client_ids: dict[int, dict[str, int]] = {}
        self.fees: dict[str, int] = {}
        self.net_deposits: dict[str, int] = {}
        #: (incident, account, asset) of every compensation credit applied
        self.credited: set[tuple[str, int, str]] = set()
        #: ts of the earliest timed change: a return from ``recovery``, a migration's step
        self.deadline = NO_DEADLINE
        #: applied migrations and their pending timed steps (``core/migrations.py``)
        self.migrations = MigrationLog()
        #: market kind -> the ledger holding its money (set up by the engine)
        self.ledgers: dict[str, Ledger] = {}

    # ------------------------------------------------------------------ lookups

    def market(self, market: object) -> Market:
        mkt = self.markets.get(market) if type(market) is str else None
        if mkt is None:
            raise Refused(X.UNKNOWN_MARKET, f"unknown market {market!r}")
        return mkt

    def account(self, account: object) -> Account:
        acct = self.find_account(account)
        if acct is None:
            raise Refused(X.UNKNOWN_ACCOUNT, f"unknown account {account!r}")
        return acct

    def find_account(self, account: object) -> Account | None:
        """The account's record, or None (also for a number that is not an int)."""
        if type(account) is not int:
            return None
        n: int = account
        found = self.account_list
        if 0 <= n < len(found):
            acct = found[n]
            if acct is not None:
                return acct
        return self.accounts.get(account)

    def add_account(self, acct: Account) -> Account:
        """Index a new account record (the one way records enter ``accounts``)."""
        n = acct.account
        self.accounts[n] = acct
        if 0 <= n < DENSE_ACCOUNTS:
            found = self.account_list
            if n >= len(found):
                found.extend([None] * (n + 1 - len(found)))
            found[n] = acct
        return acct

    def asset(self, asset: object) -> Asset:
        a = self.assets.get(asset) if type(asset) is str else None
        if a is None:
            raise Refused(X.UNKNOWN_ASSET, f"unknown asset {asset!r}")
        return a

    def find_order(self, account: object, market: str, order_id: object, client_id: object
                   ) -> Order:
        if type(order_id) is not int or not isinstance(client_id, str):
            raise Refused(X.INVALID_ARGUMENT, "order_id must be an integer, client_id a string")
        if order_id:
            order = self.orders.get(order_id)
        elif client_id:
            ids = self.client_ids.get(account)  # type: ignore[call-overload]
            oid = ids.get(client_id) if ids is not None else None
            order = self.orders.get(oid) if oid is not None else None
        else:
            raise Refused(X.INVALID_ARGUMENT, "give order_id or client_id")
        if order is None or order.account != account or order.market != market:
            raise Refused(X.UNKNOWN_ORDER, f"no open order {order_id or client_id!r} "
                                           f"for account {account} in {market}")
        return order

    # ------------------------------------------------------------------ orders leaving

    def forget(self, order: Order) -> None:
        """Drop a finished order from the id indexes (its hold is already zero)."""
        del self.orders[order.order_id]
        if order.client_id:
            ids = self.client_ids.get(order.account)
            if ids is not None:
                ids.pop(order.client_id, None)

    def close_order(self, order: Order, mkt: Market, side: BookSide | None, reason: str,
                    out: list[E.Event]) -> None:
        """Remove an open order (from the book if resting), release its hold, emit the event."""
        if side is not None:
            side.remove(order)
        oid: Any = order.order_id  # boxed once, for the event and the index
        out.append(OrderCanceled(oid, order.account, order.market, order.remaining, reason,
                                 seq=self.seq_box, ts=self.ts_box))
        self.ledgers[mkt.kind].release(mkt, order)
        del self.orders[oid]
        if order.client_id:
            ids = self.client_ids.get(order.account)
            if ids is not None:
                ids.pop(order.client_id, None)

    # ------------------------------------------------------------------ guards and modes

    def trip(self, market: str, guard: str, detail: str, out: list[E.Event]) -> None:
        """A guard failed: report it and halt the market rather than act on bad state."""
        out.append(E.GuardTripped(seq=self.seq, ts=self.ts, market=market, guard=guard,
                                  detail=detail))
        mkt = self.markets.get(market)
        if mkt is not None and mkt.mode != "halted":
            out.append(E.ModeChanged(seq=self.seq, ts=self.ts, market=market, old=mkt.mode,
                                     new="halted", reason=f"guard {guard}: {detail}"))
            mkt.mode = "halted"
            mkt.mode_reason = f"guard {guard}"
            mkt.mode_until = 0
            self.recompute_deadline()

    def recompute_deadline(self) -> None:
        self.deadline = min((m.mode_until for m in self.markets.values()
                             if m.mode == "recovery"), default=NO_DEADLINE)
        pending = self.migrations.pending
        if pending and pending[0].at_ts < self.deadline:
            self.deadline = pending[0].at_ts
