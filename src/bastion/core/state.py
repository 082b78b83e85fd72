"""Mutable state records of the engine, and the exported snapshot schema.

They are msgspec Structs so the snapshot is the state itself, encoded; no parallel DTO layer
that could drift from what the engine really holds.
"""

import msgspec

from bastion.core.commands import MarketMode, Side, STPMode
from bastion.core.perp.state import PerpState
from bastion.core.wallet.state import WalletState

#: 2: lazy funding (PerpMarket.funding_pool; positions settle when touched)
STATE_VERSION = 2


class Asset(msgspec.Struct):
    asset: str
    decimals: int


class Market(msgspec.Struct):
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


class Order(msgspec.Struct, gc=False):
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


class Account(msgspec.Struct):
    account: int
    available: dict[str, int]
    held: dict[str, int]
    stp: STPMode = "expire_taker"


class EngineState(msgspec.Struct, omit_defaults=True):
    version: int
    seq: int
    ts: int
    next_order_id: int
    next_trade_id: int
    assets: list[Asset]
    markets: list[Market]
    accounts: list[Account]
    #: per market: bids best-first then asks best-first, FIFO within a level.
    orders: list[Order]
    fees: dict[str, int]
    net_deposits: dict[str, int]
    #: perpetual ledger (markets, margins, positions, triggers); absent on a spot-only engine,
    #: so spot snapshots and their hashes are unchanged.
    perp: PerpState | None = None
    #: withdrawals and deposits (core/wallet); absent until the wallet is first used, so
    #: snapshots and hashes of engines without it are unchanged.
    wallet: WalletState | None = None
