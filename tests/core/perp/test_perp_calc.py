"""Pure perp arithmetic: position accounting, margin tiers, the liquidation-index key."""

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core.perp.calc import (
    ALWAYS_LONG,
    build_tiers,
    cushion_term,
    maintenance,
    median,
    threshold,
)
from bastion.core.perp.positions import realize
from bastion.core.perp.state import Position

TIERS = build_tiers([(50_000 * 10**8, 50, 10_000), (250_000 * 10**8, 20, 25_000),
                     (2**62, 10, 50_000)])
ONE = build_tiers([(2**62, 10, 50_000)])


def pos(size: int = 0, cost: int = 0) -> Position:
    return Position(account=1, market="M", size=size, cost=cost, funding_index=0)


def test_realize_open_add_close_and_flip():
    p = pos()
    assert realize(p, 10, 1_000) == 0 and (p.size, p.cost) == (10, 1_000)
    assert realize(p, 10, 1_200) == 0 and (p.size, p.cost) == (20, 2_200)
    assert realize(p, -5, 600) == 600 - 550 and (p.size, p.cost) == (15, 1_650)
    # sell 25 for 3000: closes 15 (worth 1800, cost 1650) and opens a short of 10 for 1200
    assert realize(p, -25, 3_000) == 150 and (p.size, p.cost) == (-10, -1_200)
    assert realize(p, 10, 1_000) == 200 and (p.size, p.cost) == (0, 0)
    assert p.realized_pnl == 50 + 150 + 200


@given(st.lists(st.tuples(st.integers(-50, 50).filter(bool), st.integers(0, 10**6)),
                max_size=30))
def test_realize_is_zero_sum_on_collateral_minus_cost(trades):
    """Whatever the rounding, each trade moves collateral - cost by exactly -+amount."""
    p = pos()
    collateral = 0
    for delta, amount in trades:
        before = collateral - p.cost
        collateral += realize(p, delta, amount)
        assert collateral - p.cost - before == (-amount if delta > 0 else amount)
        assert (p.size == 0) == (p.cost == 0) or p.size != 0


def test_maintenance_is_continuous_across_tiers():
    for bound in (50_000 * 10**8, 250_000 * 10**8):
        below, above = maintenance(TIERS, bound), maintenance(TIERS, bound + 1)
        assert 0 <= above - below <= 1
    assert maintenance(TIERS, 10_000 * 10**8) == 100 * 10**8  # 1% of 10k USDT


def test_median():
    assert median([5]) == 5 and median([3, 1, 2]) == 2 and median([1, 2, 3, 10]) == 2


@settings(max_examples=300)
@given(tiers=st.sampled_from([TIERS, ONE]), lots=st.integers(1, 10**6),
       long=st.booleans(), div=st.sampled_from([1, 100, 10**4]),
       mark=st.integers(1, 10**8), budget=st.integers(0, 10**12), probe=st.integers(0, 10**9))
def test_threshold_key_is_sound(tiers, lots, long, div, mark, budget, probe):
    """On the safe side of the key, a position's cushion term never loses more than the budget
    it was given (the property the liquidation index relies on)."""
    size = lots * 1_000 if long else -lots * 1_000
    now = cushion_term(tiers, size, mark, div)
    key = threshold(tiers, size, div, now - budget + 2)
    if long:
        price = key + 1 + probe
        if key >= ALWAYS_LONG:
            return
    else:
        price = key - 1 - probe % max(key, 1)
        if price < 1:
            return
    assert cushion_term(tiers, size, price, div) >= now - budget


def _threshold_products(tiers: list, size: int, div: int, target: int) -> int:
    """``threshold`` as first written, with the products it now avoids."""
    if size > 0:
        if target <= 0:
            return 0
        lo = 0
        for t in tiers:
            num, den = target * 1_000_000 - t.cum_ppm, 1_000_000 - t.mmr_ppm
            if lo * den <= num <= t.max_notional * den or t is tiers[-1]:
                return -(-(num * div) // (den * size))
            lo = t.max_notional
        return ALWAYS_LONG
    if target > 0:
        return 0
    lo = 0
    for t in tiers:
        num, den = t.cum_ppm - target * 1_000_000, 1_000_000 + t.mmr_ppm
        if lo * den <= num <= t.max_notional * den or t is tiers[-1]:
            return num * div // (den * -size)
        lo = t.max_notional
    return 0


@given(tiers=st.sampled_from([TIERS, ONE]), size=st.integers(-(10**12), 10**12).filter(bool),
       div=st.sampled_from([1, 100, 10**4]), target=st.integers(-(10**16), 10**16))
def test_threshold_equals_the_formula_with_products(tiers, size, div, target):
    assert threshold(tiers, size, div, target) == _threshold_products(tiers, size, div, target)
