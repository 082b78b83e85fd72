"""Mutable state records of the engine, and the exported snapshot schema.

They are msgspec Structs so the snapshot is the state itself, encoded; no parallel DTO layer
that could drift from what the engine really holds.
"""

import msgspec

from bastion.core.commands import MarketMode, Side, STPMode
from bastion.core.perp.state import PerpMarket, PerpMarketState, PerpState
from bastion.core.records import Account as Account
from bastion.core.records import Market as Market
from bastion.core.records import Order as Order
from bastion.core.wallet.state import WalletState

#: 2: lazy funding (PerpMarket.funding_pool; positions settle when touched)
STATE_VERSION = 2


class Asset(msgspec.Struct):
    asset: str
    decimals: int


class MarketState(msgspec.Struct):
    """A market in the snapshot (the engine holds ``records.Market``)."""


    market: str
    base: str
    quote: str
    price_decimals: int
    #: notional (quote units) = price * qty // price_div; fixed at creation from the decimals.
    price_div: int
    tick_size: int
    lot_size: int
    min_qty: int
    max_qty: int
    min_notional: int
    maker_fee_ppm: int
    taker_fee_ppm: int
    market_band_bps: int
    ref_band_bps: int
    kind: str = "spot"
    mode: MarketMode = "open"
    mode_reason: str = ""
    mode_until: int = 0
    ref_price: int = 0
    last_price: int = 0


class OrderState(msgspec.Struct, gc=False):
    """An open order in the snapshot (the engine holds ``records.Order``)."""


    order_id: int
    account: int
    market: str
    side: Side
    price: int
    qty: int
    remaining: int
    hold: int
    ts: int
    tif: str = "GTC"
    post_only: bool = False
    client_id: str = ""
    stp: STPMode | None = None
    #: fee rates at placement: a later fee increase never exceeds what the hold covered.
    maker_cap: int = 0
    taker_cap: int = 0
    filled_quote: int = 0
    live: bool = True


class AccountState(msgspec.Struct):
    """A spot account in the snapshot (the engine holds ``records.Account``)."""

    account: int
    available: dict[str, int]
    held: dict[str, int]
    stp: STPMode = "expire_taker"


class ScheduledStep(msgspec.Struct, kw_only=True):
    """A timed step of a migration (fee holiday start/end, mode window start/end), run at the
    first command stamped at or after ``at_ts``."""

    at_ts: int
    market: str
    migration_id: str
    index: int
    maker_fee_ppm: int | None = None
    taker_fee_ppm: int | None = None
    mode: MarketMode | None = None
    #: a mode step applies only if the market is still in this mode (an operator's halt wins)
    expect_mode: MarketMode | None = None
    reason: str = ""


class MigrationRecord(msgspec.Struct, kw_only=True):
    migration_id: str
    digest: str
    description: str
    author: str
    seq: int
    ts: int
    #: touched markets exactly as they were: rollback puts these back
    before: list[MarketState]
    created_assets: list[str]
    created_markets: list[str]
    cancelled: list[int]
    rolled_back_seq: int = 0
    #: what the operator's tool reported about its dry-run (or that it was skipped)
    dry_run: str = ""


class MigrationLog(msgspec.Struct, kw_only=True):
    records: list[MigrationRecord] = []
    #: ordered by ``at_ts``, then by the order they were scheduled in
    pending: list[ScheduledStep] = []


class CreditKey(msgspec.Struct, array_like=True, order=True):
    """A compensation already credited (``Credit`` is idempotent on it)."""

    incident: str
    account: int
    asset: str


class EngineState(msgspec.Struct, omit_defaults=True):
    version: int
    seq: int
    ts: int
    next_order_id: int
    next_trade_id: int
    assets: list[Asset]
    markets: list[MarketState]
    accounts: list[AccountState]
    #: per market: bids best-first then asks best-first, FIFO within a level.
    orders: list[OrderState]
    fees: dict[str, int]
    net_deposits: dict[str, int]
    #: perpetual ledger (markets, margins, positions, triggers); absent on a spot-only engine,
    #: so spot snapshots and their hashes are unchanged.
    perp: PerpState | None = None
    #: withdrawals and deposits (core/wallet); absent until the wallet is first used, so
    #: snapshots and hashes of engines without it are unchanged.
    wallet: WalletState | None = None
    #: applied migrations and their pending timed steps; absent until the first one
    migrations: MigrationLog | None = None
    #: compensation credits applied (empty on a venue that never credited, so older
    #: snapshots and their hashes are unchanged)
    credited: list[CreditKey] = msgspec.field(default_factory=list)


# ---------------------------------------------------------------------- live <-> snapshot

def order_state(o: Order) -> OrderState:
    return OrderState(o.order_id, o.account, o.market, o.side, o.price, o.qty, o.remaining,
                      o.hold, o.ts, o.tif, o.post_only, o.client_id, o.stp, o.maker_cap,
                      o.taker_cap, o.filled_quote, o.live)


def order_record(s: OrderState) -> Order:
    return Order(s.order_id, s.account, s.market, s.side, s.price, s.qty, s.remaining, s.hold,
                 s.ts, s.tif, s.post_only, s.client_id, s.stp, s.maker_cap, s.taker_cap,
                 s.filled_quote, s.live)


def market_state(m: Market) -> MarketState:
    return MarketState(m.market, m.base, m.quote, m.price_decimals, m.price_div, m.tick_size,
                       m.lot_size, m.min_qty, m.max_qty, m.min_notional, m.maker_fee_ppm,
                       m.taker_fee_ppm, m.market_band_bps, m.ref_band_bps, m.kind, m.mode,
                       m.mode_reason, m.mode_until, m.ref_price, m.last_price)


def market_record(s: MarketState) -> Market:
    return Market(s.market, s.base, s.quote, s.price_decimals, s.price_div, s.tick_size,
                  s.lot_size, s.min_qty, s.max_qty, s.min_notional, s.maker_fee_ppm,
                  s.taker_fee_ppm, s.market_band_bps, s.ref_band_bps, s.kind, s.mode,
                  s.mode_reason, s.mode_until, s.ref_price, s.last_price)


def fields_of(record: object) -> tuple[str, ...]:
    """The field names of a live record, native or Struct (operator overrides check them)."""
    if isinstance(record, Market):
        return MarketState.__struct_fields__
    if isinstance(record, Order):
        return OrderState.__struct_fields__
    if isinstance(record, PerpMarket):
        return PerpMarketState.__struct_fields__
    fields: tuple[str, ...] = getattr(record, "__struct_fields__", ())
    return fields


def account_state(a: Account) -> AccountState:
    """Balances in asset order (the canonical snapshot form)."""
    return AccountState(a.account, dict(sorted(a.available.items())),
                        dict(sorted(a.held.items())), a.stp)


def account_record(s: AccountState) -> Account:
    return Account(s.account, s.available, s.held, s.stp)
