"""What each use case did, as every surface renders it: the command's events plus the state it
left (the order, the canceled orders, the margin account, the withdrawal).

``Gateway`` returns these; native REST, the WebSocket API and the Binance surfaces only render
them, so none of them looks state up again to build its answer.
"""

from __future__ import annotations

from typing import NamedTuple

from bastion.api.read.model import OrderRecord
from bastion.core import events as E
from bastion.core.perp.state import MarginAccount
from bastion.core.wallet.state import Withdrawal


class Placed(NamedTuple):
    """Placing an order: the order as it stands after the command, whether the client id had
    already placed it (then nothing new happened), and the command's events (its trades among
    them; empty for a duplicate)."""

    order: OrderRecord
    duplicate: bool
    events: list[E.Event]

    def trades(self) -> list[E.Trade]:
        """The order's fills at placement (it was the taker in each)."""
        oid = self.order.order_id
        return [ev for ev in self.events if type(ev) is E.Trade and ev.taker_order == oid]


class Changed(NamedTuple):
    """An amend or a cancel: the order as it stands after the command, and its events (an
    ``OrderAmended`` or ``OrderCanceled``, and any trades a repriced order made)."""

    order: OrderRecord
    events: list[E.Event]


class CanceledAll(NamedTuple):
    """A cancel-all: the orders it canceled, in the order of the command's events."""

    orders: list[OrderRecord]
    events: list[E.Event]


class MarginChanged(NamedTuple):
    """A margin transfer or a leverage change: the cross-margin account it changed (after the
    command; None only if the account never had one), the leverage now in force in the market
    (0 for a transfer), and the events (``MarginTransferred`` or ``LeverageChanged``; empty
    when the leverage asked for was already in force)."""

    account: int
    asset: str
    margin: MarginAccount | None
    leverage: int
    events: list[E.Event]


class Withdrawn(NamedTuple):
    """A withdrawal request: the withdrawal after the command, whether the client id had
    already requested it (then nothing more is held), and the command's events."""

    withdrawal: Withdrawal
    duplicate: bool
    events: list[E.Event]
