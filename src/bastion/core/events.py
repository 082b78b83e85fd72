"""Events: what the engine says happened. Versioned msgspec Structs, diffable field by field."""

import msgspec

from bastion.core.commands import MarketMode, Side

SCHEMA_VERSION = 1


class Event(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True, gc=False):
    seq: int
    ts: int


class Rejected(Event, tag="Rejected"):
    """The one event a refused command yields; nothing in state changed."""

    code: str
    message: str
    command: str = ""
    account: int = 0
    client_id: str = ""


class AssetCreated(Event, tag="AssetCreated"):
    asset: str
    decimals: int


class MarketCreated(Event, tag="MarketCreated"):
    market: str
    reason: str = ""


class MarketUpdated(Event, tag="MarketUpdated"):
    market: str
    changes: dict[str, int]
    reason: str = ""


class ModeChanged(Event, tag="ModeChanged"):
    market: str
    old: MarketMode
    new: MarketMode
    reason: str
    until_ts: int = 0


class GuardTripped(Event, tag="GuardTripped"):
    """An invariant failed: the market is halted instead of acting on bad state."""

    market: str
    guard: str
    detail: str


class ReferencePriceSet(Event, tag="ReferencePriceSet"):
    market: str
    price: int


class BalanceChanged(Event, tag="BalanceChanged"):
    """Deposits, withdrawals and manual adjustments (not trading) — the audit trail of funds."""

    account: int
    asset: str
    delta: int
    kind: str
    reason: str = ""


class AccountUpdated(Event, tag="AccountUpdated"):
    account: int
    stp: str


class OrderAccepted(Event, tag="OrderAccepted"):
    order_id: int
    account: int
    market: str
    side: Side
    price: int
    qty: int
    order_type: str
    tif: str
    post_only: bool = False
    client_id: str = ""


class OrderAmended(Event, tag="OrderAmended"):
    order_id: int
    account: int
    market: str
    price: int
    qty: int
    remaining: int
    kept_priority: bool


class Trade(Event, tag="Trade"):
    trade_id: int
    market: str
    price: int
    qty: int
    taker_side: Side
    maker_order: int
    taker_order: int
    maker_account: int
    taker_account: int
    maker_fee: int
    taker_fee: int
    maker_remaining: int
    taker_remaining: int


class OrderCanceled(Event, tag="OrderCanceled"):
    """An order left the book without filling completely; ``reason`` is a stable code."""

    order_id: int
    account: int
    market: str
    remaining: int
    reason: str


AnyEvent = (
    Rejected
    | AssetCreated
    | MarketCreated
    | MarketUpdated
    | ModeChanged
    | GuardTripped
    | ReferencePriceSet
    | BalanceChanged
    | AccountUpdated
    | OrderAccepted
    | OrderAmended
    | Trade
    | OrderCanceled
)
