"""Perpetual state records: exported as part of ``EngineState`` so snapshot = state.

Money is in the settle asset's smallest unit. A position's ``cost`` is the signed cash put into
it (long > 0, short < 0), so its unrealized PnL at price P is ``size * P // price_div - cost``
and funds are conserved as ``sum(collateral) - sum(cost) + spot + fees == net deposits``.
"""

from typing import Any, Final

import msgspec

from bastion.core.commands import Side
from bastion.core.perp.records import MarginAccount as MarginAccount
from bastion.core.perp.records import PerpMarket as PerpMarket
from bastion.core.perp.records import Position as Position
from bastion.core.perp.records import Tier as Tier

#: Fixed-point scale of funding rates, premiums and the funding index (1e-9 per unit).
RATE_SCALE: Final = 1_000_000_000
#: Account id of the insurance fund's margin account (real accounts start at 1).
INSURANCE: Final = 0


class TierState(msgspec.Struct):
    """A margin tier in the snapshot (the engine holds ``perp.records.Tier``)."""

    max_notional: int
    max_leverage: int
    mmr_ppm: int
    cum_ppm: int = 0


class PerpMarketState(msgspec.Struct, kw_only=True):
    """A perpetual market in the snapshot (the engine holds ``perp.records.PerpMarket``)."""

    market: str
    settle: str
    price_div: int
    tiers: list[TierState]
    default_leverage: int
    price_band_bps: int
    funding_interval_ms: int
    interest_e9: int
    funding_clamp_e9: int
    max_funding_e9: int
    min_sources: int
    source_max_age_ms: int
    source_band_bps: int
    index_max_age_ms: int
    max_move_bps: int
    move_window_ms: int
    basis_window_ms: int
    liq_fee_ppm: int
    liq_step_ppm: int
    liq_slippage_bps: int
    liq_breaker_ppm: int
    liq_window_ms: int
    guards: bool = True
    # ---- oracle
    index: int = 0
    index_ts: int = 0
    mark: int = 0
    #: move guard: index/mark at the start of the current window (0: no anchor yet)
    anchor_index: int = 0
    anchor_mark: int = 0
    anchor_ts: int = 0
    #: a fresh index arrived while ``open`` and no mode change since (liquidations, TP/SL and
    #: funding act only when armed: the dYdX Oct 2025 stale-oracle lesson)
    armed: bool = False
    basis: list[tuple[int, int]] = msgspec.field(default_factory=list)
    basis_sum: int = 0
    # ---- funding
    funding_index: int = 0
    #: funding settled by positions and not yet settled by their counterparties, plus the
    #: (non-negative) rounding dust: keeps lazy settlement exactly zero-sum
    funding_pool: int = 0
    last_funding_ts: int = 0
    funding_rate_e9: int = 0
    premium_sum: int = 0
    premium_count: int = 0
    # ---- risk
    open_interest: int = 0
    liq_window: list[tuple[int, int]] = msgspec.field(default_factory=list)
    liq_window_sum: int = 0


class PositionState(msgspec.Struct):
    """A position in the snapshot (the engine holds ``perp.records.Position``)."""

    account: int
    market: str
    size: int
    cost: int
    funding_index: int
    realized_pnl: int = 0
    funding_paid: int = 0


class MarginAccountState(msgspec.Struct):
    """Cross margin in the snapshot (the engine holds ``perp.records.MarginAccount``)."""

    account: int
    asset: str
    collateral: int = 0
    order_im: int = 0
    leverage: dict[str, int] = msgspec.field(default_factory=dict)


class Trigger(msgspec.Struct):
    trigger_id: int
    account: int
    market: str
    side: Side
    qty: int
    trigger_price: int
    order_type: str
    #: "up": fires when mark >= trigger_price; "down": when mark <= trigger_price
    direction: str
    price: int = 0
    reduce_only: bool = True
    client_id: str = ""
    ts: int = 0


class PerpState(msgspec.Struct):
    markets: list[PerpMarketState]
    margins: list[MarginAccountState]
    positions: list[PositionState]
    triggers: list[Trigger]
    reduce_only_orders: list[int]
    next_trigger_id: int


# ---------------------------------------------------------------------- live <-> snapshot

def perp_market_state(m: PerpMarket) -> PerpMarketState:
    """Field for field by name, so a field added to both forms needs no edit here; shares the
    market's window lists, as ``export_state`` shares every record."""
    fields: dict[str, Any] = {name: getattr(m, name) for name in PerpMarketState.__struct_fields__}
    fields["tiers"] = [TierState(t.max_notional, t.max_leverage, t.mmr_ppm, t.cum_ppm)
                       for t in m.tiers]
    return PerpMarketState(**fields)


def perp_market_record(s: PerpMarketState) -> PerpMarket:
    fields: dict[str, Any] = {name: getattr(s, name) for name in s.__struct_fields__}
    fields["tiers"] = [Tier(t.max_notional, t.max_leverage, t.mmr_ppm, t.cum_ppm)
                       for t in s.tiers]
    return PerpMarket(**fields)


def margin_state(m: MarginAccount) -> MarginAccountState:
    """Leverage settings in market order (the canonical snapshot form)."""
    return MarginAccountState(m.account, m.asset, m.collateral, m.order_im,
                              dict(sorted(m.leverage.items())))


def margin_record(s: MarginAccountState) -> MarginAccount:
    return MarginAccount(s.account, s.asset, s.collateral, s.order_im, s.leverage)


def position_state(p: Position) -> PositionState:
    return PositionState(p.account, p.market, p.size, p.cost, p.funding_index, p.realized_pnl,
                         p.funding_paid)


def position_record(s: PositionState) -> Position:
    return Position(s.account, s.market, s.size, s.cost, s.funding_index, s.realized_pnl,
                    s.funding_paid)
