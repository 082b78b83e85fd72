"""Native API request and response bodies (msgspec Structs).

One definition serves three jobs: decoding and validating requests, encoding responses, and the
OpenAPI document (``msgspec.json.schema_components``), so docs cannot drift from behaviour.
Money is always a decimal string; ids and timestamps (ms) are integers.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from bastion.core.state import MigrationRecord, ScheduledStep

Decimal = Annotated[str, Meta(pattern=r"^[0-9]{1,30}(\.[0-9]{1,18})?$", max_length=40,
                              description="decimal number as a string, e.g. \"0.015\"",
                              examples=["0.015"])]
MarketId = Annotated[str, Meta(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$",
                               examples=["BTC-USDT"])]
AssetId = Annotated[str, Meta(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9]+$",
                              examples=["USDT"])]
#: candle intervals (name -> milliseconds): the one list the native and Binance routes, the
#: streams and the OpenAPI document use
INTERVALS: dict[str, int] = {
    "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000,
    "1h": 3_600_000, "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "8h": 28_800_000,
    "12h": 43_200_000, "1d": 86_400_000}
ClientId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:/-]+$",
                               description="your id for the order; a repeat returns the "
                                           "existing order (idempotency)")]
Reason = Annotated[str, Meta(min_length=1, max_length=200)]
AccountId = Annotated[int, Meta(ge=1, le=2**53)]
Side = Literal["buy", "sell"]
OrderType = Literal["limit", "market"]
TimeInForce = Literal["GTC", "IOC", "FOK"]
Mode = Literal["open", "post_only", "cancel_only", "recovery", "halted", "closed"]
Permission = Literal["read", "trade", "withdraw"]
OrderStatus = Literal["open", "partially_filled", "filled", "canceled", "expired"]


class Base(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class Out(msgspec.Struct, kw_only=True):
    pass


# ---------------------------------------------------------------- requests

class PlaceOrder(Base, kw_only=True):
    """A new order. ``price`` is required for limit orders and refused for market orders."""

    market: MarketId
    side: Side
    type: OrderType = "limit"
    quantity: Decimal
    price: Decimal | None = None
    time_in_force: TimeInForce = "GTC"
    post_only: bool = False
    reduce_only: bool = False
    client_order_id: ClientId | None = None


class AmendOrder(Base, kw_only=True):
    """New price and/or quantity; reducing quantity alone keeps time priority."""

    price: Decimal | None = None
    quantity: Decimal | None = None


class Withdraw(Base, kw_only=True):
    """A withdrawal request: held at once, then sent to custody by the withdrawal worker."""

    asset: AssetId
    amount: Decimal
    address: Annotated[str, Meta(min_length=1, max_length=90, examples=[
        "0x000000000000000000000000000000000000dEaD"])]
    client_id: ClientId | None = None


class MarginTransfer(Base, kw_only=True):
    """Move settle-asset funds between the spot wallet and cross margin."""

    asset: AssetId
    amount: Decimal
    direction: Literal["add", "remove"] = "add"


class Leverage(Base, kw_only=True):
    market: MarketId
    leverage: Annotated[int, Meta(ge=1, le=1000)]


class AdminDeposit(Base, kw_only=True):
    account: AccountId
    asset: AssetId
    amount: Decimal
    reason: Reason = "deposit"


class AdminMode(Base, kw_only=True):
    mode: Mode
    reason: Reason
    until_ms: Annotated[int, Meta(ge=0, le=2**62)] = 0


class AdminMarketUpdate(Base, kw_only=True):
    """Market metadata change; decimals in the market's own units (price / base asset)."""

    tick_size: Decimal | None = None
    lot_size: Decimal | None = None
    min_qty: Decimal | None = None
    max_qty: Decimal | None = None
    min_notional: Decimal | None = None
    maker_fee_ppm: Annotated[int, Meta(ge=-100_000, le=100_000)] | None = None
    taker_fee_ppm: Annotated[int, Meta(ge=0, le=100_000)] | None = None
    market_band_bps: Annotated[int, Meta(ge=1, le=9_999)] | None = None
    ref_band_bps: Annotated[int, Meta(ge=1, le=9_999)] | None = None
    reason: Reason = "metadata update"


class AdminMigrationRollback(Base, kw_only=True):
    reason: Reason


class AdminReferencePrice(Base, kw_only=True):
    price: Decimal


class AdminKey(Base, kw_only=True):
    account: AccountId
    permissions: list[Permission] = msgspec.field(default_factory=lambda: ["read", "trade"])
    label: Annotated[str, Meta(max_length=100)] = ""


class AdminKeyPermissions(Base, kw_only=True):
    permissions: list[Permission]


# ---------------------------------------------------------------- responses

class Error(Out, kw_only=True, omit_defaults=True):
    """A refusal: branch on ``code``; ``field``/``limit``/``value`` say which input broke which
    bound, in the same decimal units as the request (present only where the check has one)."""

    code: str
    message: str
    field: Annotated[str, Meta(description="the input or balance at fault, e.g. qty, price, "
                                           "notional, available, margin, decimals")] = ""
    limit: Annotated[str, Meta(description="the bound in force, e.g. the lot size or the "
                                           "available balance")] = ""
    value: Annotated[str, Meta(description="what the request asked for, in the same "
                                           "units")] = ""


class ServerTime(Out, kw_only=True):
    server_time: int


class Order(Out, kw_only=True):
    order_id: int
    client_order_id: str
    market: str
    side: Side
    type: str
    time_in_force: str
    post_only: bool
    reduce_only: bool
    price: str | None
    quantity: str
    filled_quantity: str
    remaining_quantity: str
    average_price: str | None
    filled_quote: str
    fee: str
    fee_asset: str
    status: OrderStatus
    reason: str
    created_at: int
    updated_at: int
    #: true when this answer is an earlier order with the same client_order_id
    duplicate: bool = False


class CancelAllResult(Out, kw_only=True):
    canceled: list[Order]


class Fill(Out, kw_only=True):
    trade_id: int
    order_id: int
    market: str
    side: Side
    price: str
    quantity: str
    quote_quantity: str
    fee: str
    fee_asset: str
    liquidity: Literal["maker", "taker"]
    ts: int


class Balance(Out, kw_only=True):
    asset: str
    available: str
    held: str
    total: str
    #: held for pending withdrawals (amount + fee), part of ``total``
    withdrawing: str = "0"


class Position(Out, kw_only=True):
    """A perpetual position (cross margin); ``size`` is signed (short < 0)."""

    market: str
    side: Literal["long", "short"]
    size: str
    entry_price: str
    mark_price: str | None
    index_price: str | None
    notional: str
    unrealized_pnl: str
    realized_pnl: str
    funding_paid: str
    leverage: int
    initial_margin: str
    maintenance_margin: str
    settle_asset: str


class MarginAccount(Out, kw_only=True):
    """Cross margin in one settle asset: ``equity`` = collateral + unrealized PnL;
    ``available`` is what new orders may reserve."""

    asset: str
    collateral: str
    equity: str
    unrealized_pnl: str
    initial_margin: str
    maintenance_margin: str
    order_margin: str
    available: str
    leverage: dict[str, int]


class LeverageSet(Out, kw_only=True):
    """``POST /v1/leverage``: the leverage now in force in ``market``, the account's position
    there (null when flat) and the cross-margin account of the market's settle asset."""

    market: str
    leverage: int
    position: Position | None
    margin: MarginAccount


class Funding(Out, kw_only=True):
    """Mark, index and funding of a perpetual; rates are fractions per interval."""

    market: str
    mark_price: str | None
    index_price: str | None
    index_ts: int
    funding_rate: str
    last_funding_rate: str
    interval_ms: int
    next_funding_ts: int
    open_interest: str
    armed: bool


class MarketInfo(Out, kw_only=True):
    market: str
    kind: str
    base: str
    quote: str
    mode: Mode
    mode_reason: str
    mode_until: int
    tick_size: str
    lot_size: str
    min_qty: str
    max_qty: str
    min_notional: str
    maker_fee: str
    taker_fee: str
    price_decimals: int
    base_decimals: int
    quote_decimals: int
    last_price: str | None
    reference_price: str | None


class Book(Out, kw_only=True):
    market: str
    seq: int
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]


class PublicTrade(Out, kw_only=True):
    trade_id: int
    market: str
    price: str
    quantity: str
    taker_side: Side
    ts: int


class Ticker(Out, kw_only=True):
    market: str
    last: str | None
    bid: str | None
    ask: str | None
    open_24h: str | None
    high_24h: str | None
    low_24h: str | None
    volume_24h: str
    quote_volume_24h: str
    ts: int


class Candle(Out, kw_only=True):
    start: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    quote_volume: str
    trades: int


class ApiKeyCreated(Out, kw_only=True):
    key: str
    secret: str
    account: int
    permissions: list[str]


class ApiKeyInfo(Out, kw_only=True):
    key: str
    account: int
    permissions: list[str]


class Health(Out, kw_only=True):
    seq: int
    state_hash: str
    invariants_ok: bool
    problems: list[str]


class AccountView(Out, kw_only=True):
    """An account as the operator sees it."""

    account: int
    balances: list[Balance]
    open_orders: list[Order]


class Migrations(Out, kw_only=True):
    """Applied migrations (with what each changed, for rollback) and timed steps to come."""

    seq: int
    records: list[MigrationRecord]
    pending: list[ScheduledStep]


class WithdrawalView(Out, kw_only=True):
    """A withdrawal as it stands; ``state`` follows requested -> (risk_review ->) approved ->
    submitted -> confirmed, or ends failed, cancelled or rejected."""

    id: str
    client_id: str
    asset: str
    amount: str
    fee: str
    address: str
    state: str
    txid: str
    reason: str
    created_ms: int
    updated_ms: int


class Accepted(Out, kw_only=True):
    """Admin command result: the journaled sequence number and the engine's events."""

    seq: int
    events: list[dict[str, Any]]
