"""Records of the wallet (withdrawals and deposits) and their snapshot schema."""

import msgspec

#: withdrawal states; the last four are final
REQUESTED = "requested"  # waiting for a new address's delay
RISK_REVIEW = "risk_review"
APPROVED = "approved"
SUBMITTED = "submitted"
CONFIRMED = "confirmed"
FAILED = "failed"
CANCELLED = "cancelled"
REJECTED = "rejected"
OPEN_STATES = frozenset((REQUESTED, RISK_REVIEW, APPROVED, SUBMITTED))
FINAL_STATES = frozenset((CONFIRMED, FAILED, CANCELLED, REJECTED))


class AssetRules(msgspec.Struct):
    asset: str
    min_amount: int = 1
    fee: int = 0
    daily_limit: int = 0
    manual_above: int = 0
    address_delay_ms: int = 0
    confirmations: int = 1
    paused: bool = False
    pause_reason: str = ""
    paused_by: str = ""


class Withdrawal(msgspec.Struct):
    wid: int
    account: int
    asset: str
    amount: int
    fee: int
    address: str
    state: str
    created_ts: int
    updated_ts: int
    client_id: str = ""
    not_before: int = 0
    key: str = ""
    txid: str = ""
    reason: str = ""


class DepositRecord(msgspec.Struct):
    txid: str
    account: int
    asset: str
    address: str
    amount: int
    confirmations: int
    required: int
    credited: bool
    first_ts: int
    credited_ts: int = 0


class DepositAddress(msgspec.Struct):
    address: str
    account: int
    asset: str


class KnownDestination(msgspec.Struct):
    account: int
    asset: str
    address: str
    added_ts: int


class DailyUse(msgspec.Struct):
    account: int
    asset: str
    day: int
    used: int


class WalletState(msgspec.Struct, omit_defaults=True):
    next_wid: int
    rules: list[AssetRules]
    withdrawals: list[Withdrawal]
    deposits: list[DepositRecord]
    deposit_addresses: list[DepositAddress]
    destinations: list[KnownDestination]
    daily: list[DailyUse]
