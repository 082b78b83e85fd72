"""The open order as the engine holds it: a plain typed class, not a msgspec Struct.

Compiled (``bastion.core.build``), it is a native class whose fields are read and written
directly by the compiled order path; a Struct is reached only generically there. The snapshot
keeps the Struct form (``state.OrderState``): ``to_state``/``from_state`` convert at export and
restore only, field for field, so the snapshot bytes and the state hash are unchanged.
"""

from typing import final

from bastion.core.commands import Side, STPMode
from bastion.core.state import OrderState


@final
class Order:
    __slots__ = ("account", "client_id", "filled_quote", "hold", "live", "maker_cap", "market",
                 "order_id", "post_only", "price", "qty", "remaining", "side", "stp",
                 "taker_cap", "tif", "ts")

    def __init__(self, order_id: int, account: int, market: str, side: Side, price: int,
                 qty: int, remaining: int, hold: int, ts: int, tif: str = "GTC",
                 post_only: bool = False, client_id: str = "", stp: STPMode | None = None,
                 maker_cap: int = 0, taker_cap: int = 0, filled_quote: int = 0,
                 live: bool = True) -> None:
        self.order_id = order_id
        self.account = account
        self.market = market
        self.side: Side = side
        self.price = price
        self.qty = qty
        self.remaining = remaining
        self.hold = hold
        self.ts = ts
        self.tif = tif
        self.post_only = post_only
        self.client_id = client_id
        self.stp: STPMode | None = stp
        #: fee rates at placement: a later fee increase never exceeds what the hold covered.
        self.maker_cap = maker_cap
        self.taker_cap = taker_cap
        self.filled_quote = filled_quote
        self.live = live

    def __repr__(self) -> str:
        return (f"Order(order_id={self.order_id}, account={self.account}, "
                f"market={self.market!r}, side={self.side!r}, price={self.price}, "
                f"qty={self.qty}, remaining={self.remaining}, hold={self.hold}, "
                f"tif={self.tif!r}, live={self.live})")

    def to_state(self) -> OrderState:
        return OrderState(self.order_id, self.account, self.market, self.side, self.price,
                          self.qty, self.remaining, self.hold, self.ts, self.tif,
                          self.post_only, self.client_id, self.stp, self.maker_cap,
                          self.taker_cap, self.filled_quote, self.live)


def from_state(s: OrderState) -> Order:
    return Order(s.order_id, s.account, s.market, s.side, s.price, s.qty, s.remaining, s.hold,
                 s.ts, s.tif, s.post_only, s.client_id, s.stp, s.maker_cap, s.taker_cap,
                 s.filled_quote, s.live)
