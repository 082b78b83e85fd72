"""Commands: the only way state changes. Versioned msgspec Structs, journaled as msgpack.

Schema rules: fields are only ever added with defaults (old journals stay readable); a breaking
change gets a new tag (``PlaceOrder.v2``). ``seq`` and ``ts`` (ms) are stamped by the sequencer.
"""

from typing import Literal

import msgspec

SCHEMA_VERSION = 1

Side = Literal["buy", "sell"]
OrderType = Literal["limit", "market"]
TimeInForce = Literal["GTC", "IOC", "FOK"]
STPMode = Literal["expire_taker", "expire_maker", "expire_both", "none"]
MarketMode = Literal["open", "post_only", "cancel_only", "recovery", "halted", "closed"]


class Command(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True, gc=False):
    seq: int = 0
    ts: int = 0


class CreateAsset(Command, tag="CreateAsset"):
    """Register an asset; ``decimals`` fixes its smallest unit (10**-decimals)."""

    asset: str
    decimals: int


class CreateMarket(Command, tag="CreateMarket"):
    """A spot market. Prices are integers in units of 10**-price_decimals quote per whole base;
    quantities are integers in the base asset's smallest unit. ``tick_size``/``lot_size`` are
    the grids prices/quantities must sit on, so they can be changed later by migration."""

    market: str
    base: str
    quote: str
    price_decimals: int
    tick_size: int
    lot_size: int
    min_qty: int
    max_qty: int
    min_notional: int = 0
    maker_fee_ppm: int = 0
    taker_fee_ppm: int = 0
    market_band_bps: int = 500
    ref_band_bps: int = 5
    reason: str = ""


class UpdateMarket(Command, tag="UpdateMarket"):
    """Change market metadata; ``None`` leaves a field unchanged. Journaled like any command."""

    market: str
    tick_size: int | None = None
    lot_size: int | None = None
    min_qty: int | None = None
    max_qty: int | None = None
    min_notional: int | None = None
    maker_fee_ppm: int | None = None
    taker_fee_ppm: int | None = None
    market_band_bps: int | None = None
    ref_band_bps: int | None = None
    reason: str = ""


class SetMarketMode(Command, tag="SetMarketMode"):
    """Operator mode change. ``until_ts`` (ms) is required for ``recovery``: at the first command
    stamped at or after it, the market returns to ``open`` by itself."""

    market: str
    mode: MarketMode
    reason: str
    until_ts: int = 0


class SetReferencePrice(Command, tag="SetReferencePrice"):
    """External fair price (from price feeders) used by the post-only / recovery price band."""

    market: str
    price: int


class Deposit(Command, tag="Deposit"):
    account: int
    asset: str
    amount: int
    reason: str = ""


class Withdraw(Command, tag="Withdraw"):
    account: int
    asset: str
    amount: int
    reason: str = ""


class AdjustBalance(Command, tag="AdjustBalance"):
    """Manual correction by an operator (refunds, compensation); signed, always with a reason."""

    account: int
    asset: str
    delta: int
    reason: str


class SetAccountSTP(Command, tag="SetAccountSTP"):
    account: int
    stp: STPMode


class PlaceOrder(Command, tag="PlaceOrder"):
    account: int
    market: str
    side: Side
    qty: int
    price: int = 0
    order_type: OrderType = "limit"
    tif: TimeInForce = "GTC"
    post_only: bool = False
    client_id: str = ""
    stp: STPMode | None = None


class AmendOrder(Command, tag="AmendOrder"):
    """Change price and/or quantity. Reducing quantity alone keeps time priority."""

    account: int
    market: str
    order_id: int = 0
    client_id: str = ""
    new_price: int | None = None
    new_qty: int | None = None


class CancelOrder(Command, tag="CancelOrder"):
    account: int
    market: str
    order_id: int = 0
    client_id: str = ""


class CancelAll(Command, tag="CancelAll"):
    """Per account (``market`` empty: all markets), per account and market, or, with
    ``account`` 0, every order in ``market`` (operator)."""

    account: int = 0
    market: str = ""
    reason: str = ""


AnyCommand = (
    CreateAsset
    | CreateMarket
    | UpdateMarket
    | SetMarketMode
    | SetReferencePrice
    | Deposit
    | Withdraw
    | AdjustBalance
    | SetAccountSTP
    | PlaceOrder
    | AmendOrder
    | CancelOrder
    | CancelAll
)
