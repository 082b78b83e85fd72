"""Perpetual state records: exported as part of ``EngineState`` so snapshot = state.

Money is in the settle asset's smallest unit. A position's ``cost`` is the signed cash put into
it (long > 0, short < 0), so its unrealized PnL at price P is ``size * P // price_div - cost``
and funds are conserved as ``sum(collateral) - sum(cost) + spot + fees == net deposits``.
"""

import msgspec

from bastion.core.commands import Side
from bastion.core.perp.records import MarginAccount as MarginAccount
from bastion.core.perp.records import PerpMarket as PerpMarket
from bastion.core.perp.records import Position as Position
from bastion.core.perp.records import Tier as Tier

#: Fixed-point scale of funding rates, premiums and the funding index (1e-9 per unit).
RATE_SCALE = 1_000_000_000
#: Account id of the insurance fund's margin account (real accounts start at 1).
INSURANCE = 0


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
    positions: list[Position]
    triggers: list[Trigger]
    reduce_only_orders: list[int]
    next_trigger_id: int


# ---------------------------------------------------------------------- live <-> snapshot

def perp_market_state(m: PerpMarket) -> PerpMarketState:
    """Shares the market's window lists, as ``export_state`` shares every record."""
    return PerpMarketState(
        market=m.market, settle=m.settle, price_div=m.price_div,
        tiers=[TierState(t.max_notional, t.max_leverage, t.mmr_ppm, t.cum_ppm)
               for t in m.tiers],
        default_leverage=m.default_leverage, price_band_bps=m.price_band_bps,
        funding_interval_ms=m.funding_interval_ms, interest_e9=m.interest_e9,
        funding_clamp_e9=m.funding_clamp_e9, max_funding_e9=m.max_funding_e9,
        min_sources=m.min_sources, source_max_age_ms=m.source_max_age_ms,
        source_band_bps=m.source_band_bps, index_max_age_ms=m.index_max_age_ms,
        max_move_bps=m.max_move_bps, move_window_ms=m.move_window_ms,
        basis_window_ms=m.basis_window_ms, liq_fee_ppm=m.liq_fee_ppm,
        liq_step_ppm=m.liq_step_ppm, liq_slippage_bps=m.liq_slippage_bps,
        liq_breaker_ppm=m.liq_breaker_ppm, liq_window_ms=m.liq_window_ms, guards=m.guards,
        index=m.index, index_ts=m.index_ts, mark=m.mark, anchor_index=m.anchor_index,
        anchor_mark=m.anchor_mark, anchor_ts=m.anchor_ts, armed=m.armed, basis=m.basis,
        basis_sum=m.basis_sum, funding_index=m.funding_index, funding_pool=m.funding_pool,
        last_funding_ts=m.last_funding_ts, funding_rate_e9=m.funding_rate_e9,
        premium_sum=m.premium_sum, premium_count=m.premium_count,
        open_interest=m.open_interest, liq_window=m.liq_window,
        liq_window_sum=m.liq_window_sum)


def perp_market_record(s: PerpMarketState) -> PerpMarket:
    return PerpMarket(
        market=s.market, settle=s.settle, price_div=s.price_div,
        tiers=[Tier(t.max_notional, t.max_leverage, t.mmr_ppm, t.cum_ppm) for t in s.tiers],
        default_leverage=s.default_leverage, price_band_bps=s.price_band_bps,
        funding_interval_ms=s.funding_interval_ms, interest_e9=s.interest_e9,
        funding_clamp_e9=s.funding_clamp_e9, max_funding_e9=s.max_funding_e9,
        min_sources=s.min_sources, source_max_age_ms=s.source_max_age_ms,
        source_band_bps=s.source_band_bps, index_max_age_ms=s.index_max_age_ms,
        max_move_bps=s.max_move_bps, move_window_ms=s.move_window_ms,
        basis_window_ms=s.basis_window_ms, liq_fee_ppm=s.liq_fee_ppm,
        liq_step_ppm=s.liq_step_ppm, liq_slippage_bps=s.liq_slippage_bps,
        liq_breaker_ppm=s.liq_breaker_ppm, liq_window_ms=s.liq_window_ms, guards=s.guards,
        index=s.index, index_ts=s.index_ts, mark=s.mark, anchor_index=s.anchor_index,
        anchor_mark=s.anchor_mark, anchor_ts=s.anchor_ts, armed=s.armed, basis=s.basis,
        basis_sum=s.basis_sum, funding_index=s.funding_index, funding_pool=s.funding_pool,
        last_funding_ts=s.last_funding_ts, funding_rate_e9=s.funding_rate_e9,
        premium_sum=s.premium_sum, premium_count=s.premium_count,
        open_interest=s.open_interest, liq_window=s.liq_window,
        liq_window_sum=s.liq_window_sum)


def margin_state(m: MarginAccount) -> MarginAccountState:
    """Leverage settings in market order (the canonical snapshot form)."""
    return MarginAccountState(m.account, m.asset, m.collateral, m.order_im,
                              dict(sorted(m.leverage.items())))


def margin_record(s: MarginAccountState) -> MarginAccount:
    return MarginAccount(s.account, s.asset, s.collateral, s.order_im, s.leverage)
