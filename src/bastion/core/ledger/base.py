"""The ledger interface: what the one order lifecycle asks of money, whatever the market kind.

Like exchange-core's risk engine beside its matching engine: order entry validates a hold
(``reserve_terms``), then reserves it (``reserve``); each fill is settled (``settle_fill``) after
order entry priced it and charged its fees; an order leaving the book frees what it still holds
(``release``). Amending re-validates (``amend_terms``) and re-reserves (``rehold``), a quantity
cut shrinks the hold (``shrink``); ``audit`` and ``totals`` feed the engine's audit. ``clipper`` lets a ledger cut fills short (reduce-only).
Validation methods raise ``Refused`` and change nothing; the others never refuse.

A base class rather than a ``Protocol``: compiled, order entry's calls through ``Ledger``
are native method calls, not Python ones (each fill and order makes several).
"""

from bastion.core import events as E
from bastion.core.book import BookSide
from bastion.core.matching import Clip
from bastion.core.records import Order
from bastion.core.state import Account, Market


class Ledger:
    #: whether ``entry`` checks anything (order entry skips the call when it does not)
    has_entry_checks: bool

    def __init__(self, has_entry_checks: bool) -> None:
        self.has_entry_checks = has_entry_checks

    def entry(self, mkt: Market, side: object, reduce_only: object) -> tuple[int, bool]:
        """Checks before the shared order terms, on the command's raw ``side`` and
        ``reduce_only`` values: returns (price band limit or 0, whether the minimum notional
        applies)."""
        raise NotImplementedError

    def reserve_terms(self, acct: Account, mkt: Market, is_buy: bool, qty: int, price: int,
                      market_order: bool, reduce_only: bool) -> tuple[int, int]:
        """(quantity, hold) the validated order may have; the quantity may be cut (market buys
        clipped to funds, reduce-only orders to the position)."""
        raise NotImplementedError

    def reserve(self, mkt: Market, order: Order, reduce_only: bool) -> bool:
        """Reserve an accepted order's hold; returns the reduce-only flag it was accepted with."""
        raise NotImplementedError

    def settle_fill(self, mkt: Market, maker: Order, taker: Order, price: int, qty: int,
                    notional: int, maker_fee: int, taker_fee: int) -> None:
        """Move the money of one fill (remainings are already decremented)."""
        raise NotImplementedError

    def release(self, mkt: Market, order: Order) -> None:
        """An order leaves (cancel, expiry, self-trade, fully filled): free its hold."""
        raise NotImplementedError

    def clipper(self, mkt: Market, order: Order, opposite: BookSide) -> Clip | None:
        """A fill clipper for this taker, or None when fills are never cut."""
        raise NotImplementedError

    def shrink(self, mkt: Market, order: Order, before: int) -> None:
        """The order's remaining went down from ``before``: shrink its hold to match."""
        raise NotImplementedError

    def check_reprice(self, mkt: Market, order: Order, new_price: int) -> None:
        """Ledger-specific limits on a re-entered order's price (the perp price band)."""
        raise NotImplementedError

    def amend_terms(self, mkt: Market, order: Order, new_price: int, new_remaining: int
                    ) -> int:
        """The hold a re-entered order needs, or ``Refused``."""
        raise NotImplementedError

    def rehold(self, mkt: Market, order: Order, new_hold: int) -> None:
        """Swap the order's hold for ``new_hold`` (validated by ``amend_terms``)."""
        raise NotImplementedError

    def mode_changed(self, mkt: Market, out: list[E.Event]) -> None:
        """The market's mode changed (after the orders a close cancels are gone)."""
        raise NotImplementedError

    def audit(self) -> list[str]:
        """Problems in this ledger's own records (holds, positions), O(state)."""
        raise NotImplementedError

    def totals(self) -> dict[str, int]:
        """This ledger's money per asset, for the engine's funds-conservation audit."""
        raise NotImplementedError
