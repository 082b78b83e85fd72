"""Events: what the engine says happened. Versioned msgspec Structs, diffable field by field."""

import msgspec

from bastion.core.commands import MarketMode, Side

SCHEMA_VERSION = 1


class Event(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True, gc=False):
    seq: int
    ts: int


class Rejected(Event, tag="Rejected"):
    """The one event a refused command yields; nothing in state changed.

    Typed detail, set (``field`` non-empty) where a limit or a rule about one quantity
    refused the command, so an edge never parses ``message``: ``field`` names what is at
    fault (``qty``, ``price``, ``notional``, ``available``, ``margin``, ``amount``,
    ``daily_used``; ``post_only`` when the market's mode takes post-only orders only),
    ``value`` is what the command asked for (integer units of that field) and ``limit`` the
    bound it crossed (0 when the field is malformed rather than out of bounds)."""

    code: str
    message: str
    command: str = ""
    account: int = 0
    client_id: str = ""
    field: str = ""
    limit: int = 0
    value: int = 0


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
    reduce_only: bool = False


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


# ---------------------------------------------------------------------------- perpetuals


class IndexUpdated(Event, tag="IndexUpdated"):
    """Accepted oracle update: index from ``used`` fresh sources (``dropped`` were stale)."""

    market: str
    index: int
    mark: int
    used: int
    dropped: int = 0


class OracleReset(Event, tag="OracleReset"):
    """Operator re-anchored the oracle move guard of a restricted market."""

    market: str
    reason: str


class FundingSettled(Event, tag="FundingSettled"):
    """One funding boundary. ``rate_e9`` per interval; ``dt`` (ms) accrued; ``paid``: what the
    paying side owes for this step in total (floored; each position settles its part lazily,
    through the market's funding pool, which also keeps the rounding dust); ``dust`` is no
    longer used (0). ``paused`` means nothing accrued (restricted mode or no fresh oracle)."""

    market: str
    rate_e9: int
    index: int
    dt: int
    paid: int = 0
    dust: int = 0
    paused: bool = False


class MarginTransferred(Event, tag="MarginTransferred"):
    """Spot wallet <-> cross margin; ``delta`` > 0 adds margin."""

    account: int
    asset: str
    delta: int


class LeverageChanged(Event, tag="LeverageChanged"):
    account: int
    market: str
    leverage: int


class InsuranceFunded(Event, tag="InsuranceFunded"):
    asset: str
    amount: int
    reason: str = ""


class LiquidationStarted(Event, tag="LiquidationStarted"):
    """Margin balance fell below maintenance margin (both in settle units)."""

    account: int
    asset: str
    equity: int
    maintenance: int


class Liquidated(Event, tag="Liquidated"):
    """One liquidation step. ``via``: ``book`` (an IOC through the book), ``insurance`` (the fund
    took the rest at the bankruptcy notional) or ``adl``. ``fee`` went to the insurance fund."""

    account: int
    market: str
    qty: int
    notional: int
    via: str
    fee: int = 0
    order_id: int = 0


class Deleveraged(Event, tag="Deleveraged"):
    """ADL: ``account``'s position was closed by ``qty`` against a bankrupt ``counterparty``."""

    account: int
    market: str
    qty: int
    notional: int
    counterparty: int


class LossCovered(Event, tag="LossCovered"):
    """The insurance fund paid an account's negative balance; ``shortfall`` > 0 means the fund
    itself went below zero (an operator must recapitalise it)."""

    account: int
    asset: str
    amount: int
    shortfall: int = 0


class TriggerAccepted(Event, tag="TriggerAccepted"):
    trigger_id: int
    account: int
    market: str
    side: Side
    qty: int
    trigger_price: int
    order_type: str
    price: int = 0
    reduce_only: bool = True
    client_id: str = ""


class TriggerFired(Event, tag="TriggerFired"):
    """The mark crossed the trigger. ``order_id`` is the order it became; ``result`` is
    ``""`` or the reject code that stopped the order."""

    trigger_id: int
    account: int
    market: str
    mark: int
    order_id: int = 0
    result: str = ""


class TriggerCanceled(Event, tag="TriggerCanceled"):
    trigger_id: int
    account: int
    market: str
    reason: str


# ---------------------------------------------------------------------- withdrawals, deposits

class WithdrawalUpdated(Event, tag="WithdrawalUpdated"):
    """Every withdrawal transition: requested, risk_review, approved, submitted, confirmed,
    failed, cancelled, rejected."""

    wid: int
    account: int
    asset: str
    amount: int
    fee: int
    state: str
    address: str = ""
    client_id: str = ""
    txid: str = ""
    reason: str = ""


class DepositUpdated(Event, tag="DepositUpdated"):
    """``confirming`` (n of required) or ``credited`` (exactly once per txid)."""

    txid: str
    account: int
    asset: str
    amount: int
    confirmations: int
    required: int
    state: str


class WithdrawalsPaused(Event, tag="WithdrawalsPaused"):
    asset: str
    paused: bool
    reason: str
    by: str


class WithdrawalRulesSet(Event, tag="WithdrawalRulesSet"):
    asset: str
    reason: str = ""


class DepositAddressAssigned(Event, tag="DepositAddressAssigned"):
    account: int
    asset: str
    address: str
class MigrationApplied(Event, tag="MigrationApplied"):
    """After the events of its changes (created, updated, cancelled, mode changed)."""

    migration_id: str
    digest: str
    cancelled: int
    scheduled: int


class MigrationRolledBack(Event, tag="MigrationRolledBack"):
    migration_id: str
    reason: str


class MigrationStepSkipped(Event, tag="MigrationStepSkipped"):
    """A timed step found the market changed meanwhile (e.g. halted by an operator) and left
    it as it was."""

    migration_id: str
    market: str
    reason: str


class Credited(Event, tag="Credited"):
    """A compensation credit (its ``BalanceChanged`` kind is ``compensation``); ``duplicate``:
    this incident already credited this account and asset, nothing moved."""

    account: int
    asset: str
    amount: int
    incident: str
    duplicate: bool = False


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
    | IndexUpdated
    | OracleReset
    | FundingSettled
    | MarginTransferred
    | LeverageChanged
    | InsuranceFunded
    | LiquidationStarted
    | Liquidated
    | Deleveraged
    | LossCovered
    | TriggerAccepted
    | TriggerFired
    | TriggerCanceled
    | WithdrawalUpdated
    | DepositUpdated
    | WithdrawalsPaused
    | WithdrawalRulesSet
    | DepositAddressAssigned
    | MigrationApplied
    | MigrationRolledBack
    | MigrationStepSkipped
    | Credited
)
