"""Commands: the only way state changes. Versioned msgspec Structs, journaled as msgpack.

Schema rules: fields are only ever added with defaults (old journals stay readable); a breaking
change gets a new tag (``PlaceOrder.v2``). ``seq`` and ``ts`` (ms) are stamped by the sequencer.
"""

from typing import Literal

import msgspec

from bastion.core.migration_spec import AnyChange

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
    #: perpetuals only: the order may only shrink a position (clipped at every fill).
    reduce_only: bool = False


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


# ---------------------------------------------------------------------------- perpetuals
# Units: prices and quantities as for spot (quantity in the base asset's smallest unit; the
# contract size is the quantity step). Money is in the settle asset's smallest unit. Rates are
# fixed-point with RATE_SCALE = 10**9 (1e-9 per unit: 0.01% = 100_000), margins in ppm.

TriggerType = Literal["stop_market", "stop_limit", "take_profit", "take_profit_limit"]


class MarginTier(msgspec.Struct, kw_only=True):
    """Positions with notional (settle units) up to ``max_notional`` may use up to
    ``max_leverage`` and need ``maintenance_ppm`` of their notional as maintenance margin."""

    max_notional: int
    max_leverage: int
    maintenance_ppm: int


class CreatePerpMarket(Command, tag="CreatePerpMarket"):
    """A linear perpetual settled in ``settle``. ``base`` must be a registered asset (its
    decimals define the quantity unit); no base asset ever moves. ``tiers`` (ascending
    ``max_notional``, the last one open-ended) default to one tier from ``max_leverage`` and
    ``maintenance_ppm``. ``guards=False`` exists only for drills that must show a cascade."""

    market: str
    base: str
    settle: str
    price_decimals: int
    tick_size: int
    contract_size: int
    min_qty: int
    max_qty: int
    min_notional: int = 0
    maker_fee_ppm: int = 0
    taker_fee_ppm: int = 0
    market_band_bps: int = 500
    ref_band_bps: int = 5
    max_leverage: int = 20
    maintenance_ppm: int = 25_000
    tiers: list[MarginTier] = []
    default_leverage: int = 10
    price_band_bps: int = 500
    funding_interval_ms: int = 8 * 3_600_000
    interest_e9: int = 100_000
    funding_clamp_e9: int = 500_000
    max_funding_e9: int = 3_000_000
    min_sources: int = 2
    source_max_age_ms: int = 10_000
    source_band_bps: int = 300
    index_max_age_ms: int = 30_000
    max_move_bps: int = 1_000
    move_window_ms: int = 60_000
    basis_window_ms: int = 30_000
    liq_fee_ppm: int = 5_000
    liq_step_ppm: int = 200_000
    liq_slippage_bps: int = 300
    liq_breaker_ppm: int = 200_000
    liq_window_ms: int = 60_000
    guards: bool = True
    reason: str = ""


class SourcePrice(msgspec.Struct, kw_only=True):
    """One feeder's observation; ``ts`` (ms) is the source's own time, checked for staleness."""

    source: str
    price: int
    ts: int


class UpdateIndex(Command, tag="UpdateIndex"):
    """Oracle update from price feeders: index from the fresh sources, then the mark price."""

    market: str
    sources: list[SourcePrice]


class FundingTick(Command, tag="FundingTick"):
    """Timer command stamped by the sequencer at funding boundaries. ``index`` is optional: an
    authoritative cumulative index from an external funding service; it passes the same
    guard as a computed one (Paradex 2026: such an index arrived reset to zero)."""

    market: str
    index: int | None = None


class ResetOracle(Command, tag="ResetOracle"):
    """Operator: forget the oracle move anchor (after a real jump halted the market). Only in a
    restricted mode; the next accepted index becomes the new anchor."""

    market: str
    reason: str


class AddMargin(Command, tag="AddMargin"):
    """Move settle-asset funds from the spot wallet into cross margin (accepted in any mode)."""

    account: int
    asset: str
    amount: int


class RemoveMargin(Command, tag="RemoveMargin"):
    """Move margin back to the spot wallet; only what exceeds the initial margin."""

    account: int
    asset: str
    amount: int


class SetLeverage(Command, tag="SetLeverage"):
    account: int
    market: str
    leverage: int


class FundInsurance(Command, tag="FundInsurance"):
    """Operator: capitalise the insurance fund of a settle asset (counts as a deposit)."""

    asset: str
    amount: int
    reason: str


class PlaceTrigger(Command, tag="PlaceTrigger"):
    """TP/SL held off-book until the mark price crosses ``trigger_price``. Stops fire when the
    mark moves against the side (buy: up, sell: down), take-profits the other way. ``price``
    is the limit for the ``*_limit`` types."""

    account: int
    market: str
    side: Side
    qty: int
    trigger_price: int
    order_type: TriggerType
    price: int = 0
    reduce_only: bool = True
    client_id: str = ""


class CancelTrigger(Command, tag="CancelTrigger"):
    account: int
    market: str
    trigger_id: int = 0
    client_id: str = ""


# ---------------------------------------------------------------------- withdrawals, deposits
# (core/withdrawals.py): the journaled state machine behind the withdrawal worker.


class SetWithdrawalRules(Command, tag="SetWithdrawalRules"):
    """Per-asset risk rules (operator). ``daily_limit``/``manual_above`` of 0 mean none."""

    asset: str
    min_amount: int = 1
    fee: int = 0
    daily_limit: int = 0
    manual_above: int = 0
    address_delay_ms: int = 0
    confirmations: int = 1
    reason: str = ""


class RequestWithdrawal(Command, tag="RequestWithdrawal"):
    """Holds amount + fee and queues a withdrawal; ``client_id`` is unique per account."""

    account: int
    asset: str
    amount: int
    address: str
    client_id: str = ""


class CancelWithdrawal(Command, tag="CancelWithdrawal"):
    """By the user, until the withdrawal is submitted."""

    account: int
    wid: int


class ReviewWithdrawal(Command, tag="ReviewWithdrawal"):
    """Operator decision on a withdrawal in risk review."""

    wid: int
    approve: bool
    operator: str
    reason: str = ""


class ReleaseWithdrawal(Command, tag="ReleaseWithdrawal"):
    """A withdrawal waiting for its new address's delay becomes approved (from its time on)."""

    wid: int


class SubmitWithdrawal(Command, tag="SubmitWithdrawal"):
    """The worker claims an approved withdrawal before sending it to custody: cancel closes."""

    wid: int
    key: str


class ConfirmWithdrawal(Command, tag="ConfirmWithdrawal"):
    wid: int
    txid: str


class FailWithdrawal(Command, tag="FailWithdrawal"):
    """Custody refused it or the chain failed it: the held funds go back."""

    wid: int
    reason: str


class PauseWithdrawals(Command, tag="PauseWithdrawals"):
    """Pause (or resume) new withdrawals of an asset; ``by`` is the operator or "auto"."""

    asset: str
    paused: bool
    reason: str
    by: str = "operator"


class AssignDepositAddress(Command, tag="AssignDepositAddress"):
    account: int
    asset: str
    address: str


class ObserveDeposit(Command, tag="ObserveDeposit"):
    """What the chain shows for a deposit transaction; credited once at the asset's N."""

    txid: str
    asset: str
    address: str
    amount: int
    confirmations: int


class ApplyMigration(Command, tag="ApplyMigration"):
    """A metadata migration, applied atomically (every change checked against live state
    first, then all of it or nothing) and recorded under its id: re-applying is refused, and
    ``RollbackMigration`` puts back the metadata recorded before it (``core/migrations.py``)."""

    migration_id: str
    digest: str
    description: str
    author: str
    changes: list[AnyChange]
    #: what the operator's tool says about its dry-run ("passed ...", "skipped by ..."): the
    #: journal keeps it next to the change, for the audit trail
    dry_run: str = ""


class RollbackMigration(Command, tag="RollbackMigration"):
    migration_id: str
    reason: str


class CancelOrders(Command, tag="CancelOrders"):
    """Operator mass cancel: every resting order and TP/SL trigger the filter selects when it
    applies. Empty lists select everything; ``kinds``/``except_kinds`` from ``limit``,
    ``post_only``, ``market``, ``tp_sl`` (``except_kinds=["tp_sl"]``: the Paradex cancel)."""

    markets: list[str] = []
    accounts: list[int] = []
    kinds: list[str] = []
    except_kinds: list[str] = []
    side: str = ""
    reason: str = ""


class Credit(Command, tag="Credit"):
    """Operator: compensation owed after an incident, into the spot wallet. Idempotent per
    (``incident``, ``account``, ``asset``): a repeat credits nothing (``Credited.duplicate``)."""

    account: int
    asset: str
    amount: int
    incident: str
    reason: str


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
    | CreatePerpMarket
    | UpdateIndex
    | FundingTick
    | ResetOracle
    | AddMargin
    | RemoveMargin
    | SetLeverage
    | FundInsurance
    | PlaceTrigger
    | CancelTrigger
    | SetWithdrawalRules
    | RequestWithdrawal
    | CancelWithdrawal
    | ReviewWithdrawal
    | ReleaseWithdrawal
    | SubmitWithdrawal
    | ConfirmWithdrawal
    | FailWithdrawal
    | PauseWithdrawals
    | AssignDepositAddress
    | ObserveDeposit
    | ApplyMigration
    | RollbackMigration
    | Credit
    | CancelOrders
)
