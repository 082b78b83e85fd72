"""CreatePerpMarket: validate the contract spec, then register the book and the perp record.

The spot part (ids, tick/lot grid, fees, bands) goes through ``validate_market`` like any
market, with the settle asset as quote and the contract size as lot; the perp part is checked
here so a market can never be created with margin rules that make liquidation unsound.
"""

from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.book import OrderBook
from bastion.core.instruments import validate_market
from bastion.core.ledger.margin import MarginLedger
from bastion.core.perp.calc import PPM, build_tiers
from bastion.core.perp.state import RATE_SCALE, PerpMarket
from bastion.core.rules import Refused, int_in
from bastion.core.state import Market

MAX_LEVERAGE = 1_000
DAY_MS = 86_400_000


def _tier_specs(cmd: C.CreatePerpMarket) -> list[tuple[int, int, int]]:
    if not isinstance(cmd.tiers, list) or len(cmd.tiers) > 20:
        raise Refused(X.INVALID_MARKET_SPEC, "tiers must be a list of at most 20")
    if not cmd.tiers:
        return [(X.MAX_INT, cmd.max_leverage, cmd.maintenance_ppm)]
    return [(t.max_notional, t.max_leverage, t.maintenance_ppm) for t in cmd.tiers]


def validate_perp(cmd: C.CreatePerpMarket) -> str:
    """The first problem with the perp part of a spec, or ``""``."""
    specs = _tier_specs(cmd)
    prev = (0, MAX_LEVERAGE + 1, 0)
    for i, (bound, lev, mmr) in enumerate(specs):
        if not (int_in(bound, 1, X.MAX_INT) and int_in(lev, 1, MAX_LEVERAGE)
                and int_in(mmr, 1, PPM - 1)):
            return f"tier {i}: max_notional > 0, leverage in 1..{MAX_LEVERAGE}, mmr in ppm"
        if bound <= prev[0] or lev > prev[1] or mmr < prev[2]:
            return (f"tier {i}: tiers need rising max_notional, non-rising leverage and "
                    "non-falling maintenance")
        if mmr * lev >= PPM:
            return (f"tier {i}: maintenance {mmr} ppm must stay below the initial margin "
                    f"1/{lev} (else a fresh position is liquidatable)")
        prev = (bound, lev, mmr)
    if not int_in(cmd.default_leverage, 1, specs[0][1]):
        return f"default_leverage must be in 1..{specs[0][1]}"
    checks: list[tuple[str, object, int, int]] = [
        ("price_band_bps", cmd.price_band_bps, 1, 9_999),
        ("funding_interval_ms", cmd.funding_interval_ms, 1_000, DAY_MS),
        ("max_funding_e9", cmd.max_funding_e9, 1, RATE_SCALE),
        ("funding_clamp_e9", cmd.funding_clamp_e9, 0, RATE_SCALE),
        ("interest_e9", cmd.interest_e9, -RATE_SCALE, RATE_SCALE),
        ("min_sources", cmd.min_sources, 1, 16),
        ("source_max_age_ms", cmd.source_max_age_ms, 1, DAY_MS),
        ("source_band_bps", cmd.source_band_bps, 1, 9_999),
        ("index_max_age_ms", cmd.index_max_age_ms, 1, DAY_MS),
        ("max_move_bps", cmd.max_move_bps, 1, 9_999),
        ("move_window_ms", cmd.move_window_ms, 1, DAY_MS),
        ("basis_window_ms", cmd.basis_window_ms, 1, DAY_MS),
        ("liq_fee_ppm", cmd.liq_fee_ppm, 0, 100_000),
        ("liq_step_ppm", cmd.liq_step_ppm, 1, PPM),
        ("liq_slippage_bps", cmd.liq_slippage_bps, 1, 9_999),
        ("liq_breaker_ppm", cmd.liq_breaker_ppm, 0, 10 * PPM),
        ("liq_window_ms", cmd.liq_window_ms, 1, DAY_MS),
    ]
    for name, val, low, high in checks:
        if not int_in(val, low, high):
            return f"{name} must be an integer in {low}..{high}"
    if type(cmd.guards) is not bool:
        return "guards must be a boolean"
    return ""


def create_perp_market(pe: MarginLedger, cmd: C.CreatePerpMarket, out: list[E.Event]) -> None:
    v = pe.v
    if isinstance(cmd.market, str) and cmd.market in v.markets:
        raise Refused(X.MARKET_EXISTS, f"market {cmd.market} exists")
    base = v.asset(cmd.base)
    settle = v.asset(cmd.settle)
    spot = C.CreateMarket(market=cmd.market, base=cmd.base, quote=cmd.settle,
                          price_decimals=cmd.price_decimals, tick_size=cmd.tick_size,
                          lot_size=cmd.contract_size, min_qty=cmd.min_qty, max_qty=cmd.max_qty,
                          min_notional=cmd.min_notional, maker_fee_ppm=cmd.maker_fee_ppm,
                          taker_fee_ppm=cmd.taker_fee_ppm, market_band_bps=cmd.market_band_bps,
                          ref_band_bps=cmd.ref_band_bps)
    problem = validate_market(spot, base.decimals, settle.decimals) or validate_perp(cmd)
    if problem:
        raise Refused(X.INVALID_MARKET_SPEC, problem)
    price_div = 10 ** (cmd.price_decimals + base.decimals - settle.decimals)
    mkt = Market(market=cmd.market, base=cmd.base, quote=cmd.settle,
                 price_decimals=cmd.price_decimals, price_div=price_div,
                 tick_size=cmd.tick_size, lot_size=cmd.contract_size, min_qty=cmd.min_qty,
                 max_qty=cmd.max_qty, min_notional=cmd.min_notional,
                 maker_fee_ppm=cmd.maker_fee_ppm, taker_fee_ppm=cmd.taker_fee_ppm,
                 market_band_bps=cmd.market_band_bps, ref_band_bps=cmd.ref_band_bps,
                 kind="perp")
    pm = PerpMarket(
        market=cmd.market, settle=cmd.settle, price_div=price_div,
        tiers=build_tiers(_tier_specs(cmd)), default_leverage=cmd.default_leverage,
        price_band_bps=cmd.price_band_bps, funding_interval_ms=cmd.funding_interval_ms,
        interest_e9=cmd.interest_e9, funding_clamp_e9=cmd.funding_clamp_e9,
        max_funding_e9=cmd.max_funding_e9, min_sources=cmd.min_sources,
        source_max_age_ms=cmd.source_max_age_ms, source_band_bps=cmd.source_band_bps,
        index_max_age_ms=cmd.index_max_age_ms, max_move_bps=cmd.max_move_bps,
        move_window_ms=cmd.move_window_ms, basis_window_ms=cmd.basis_window_ms,
        liq_fee_ppm=cmd.liq_fee_ppm, liq_step_ppm=cmd.liq_step_ppm,
        liq_slippage_bps=cmd.liq_slippage_bps, liq_breaker_ppm=cmd.liq_breaker_ppm,
        liq_window_ms=cmd.liq_window_ms, guards=cmd.guards, last_funding_ts=v.ts)
    v.markets[mkt.market] = mkt
    v.books[mkt.market] = OrderBook(mkt.market)
    pe.markets[mkt.market] = pm
    out.append(E.MarketCreated(seq=v.seq, ts=v.ts, market=mkt.market,
                               reason=cmd.reason if isinstance(cmd.reason, str) else ""))
