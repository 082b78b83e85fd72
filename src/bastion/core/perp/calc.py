"""Pure integer arithmetic of perpetuals: values, margin tiers, medians, liquidation thresholds.

No state, no engine: every rounding choice is made here, once, in the venue's favour (values
floor, margins ceil), so the rest of the package never rounds on its own.
"""

from typing import Final

from bastion.core.arith import mul, mul_div
from bastion.core.perp.state import Tier
from bastion.core.rules import BPS as BPS
from bastion.core.rules import PPM as PPM
from bastion.core.rules import ceil_div as ceil_div

#: "Check this account on every mark update" for a long key (mark <= key always holds).
ALWAYS_LONG: Final = 2**63
#: Same for a short key (mark >= 0 always holds).
ALWAYS_SHORT: Final = 0


def tdiv(a: int, b: int) -> int:
    """a / b truncated toward zero (b > 0): symmetric, so a sign flip never changes a size."""
    return a // b if a >= 0 else -(-a // b)


def clamp(x: int, low: int, high: int) -> int:
    return low if x < low else high if x > high else x


def median(values: list[int]) -> int:
    """Lower-biased integer median (mean of the two middle values, floored)."""
    s = sorted(values)
    n = len(s)
    mid = n // 2
    return s[mid] if n % 2 else (s[mid - 1] + s[mid]) // 2


def value(size: int, price: int, div: int) -> int:
    """Signed position value at ``price`` in settle units, floored (conservative for both
    sides: a long is worth a little less, a short owes a little more)."""
    return mul(size, price) // div


def notional(size: int, price: int, div: int) -> int:
    """Unsigned notional, floored (used to pick tiers and size margins)."""
    return mul(abs(size), price) // div


def build_tiers(specs: list[tuple[int, int, int]]) -> list[Tier]:
    """Tiers from (max_notional, max_leverage, mmr_ppm), with continuity offsets."""
    tiers: list[Tier] = []
    cum = 0
    prev_bound = 0
    prev_mmr = 0
    for max_notional, max_leverage, mmr in specs:
        cum += prev_bound * (mmr - prev_mmr)
        tiers.append(Tier(max_notional=max_notional, max_leverage=max_leverage, mmr_ppm=mmr,
                          cum_ppm=cum))
        prev_bound, prev_mmr = max_notional, mmr
    return tiers


def tier_for(tiers: list[Tier], notional_value: int) -> Tier:
    for tier in tiers:
        if notional_value <= tier.max_notional:
            return tier
    return tiers[-1]


def maintenance(tiers: list[Tier], notional_value: int) -> int:
    """Maintenance margin of one position: continuous, piecewise linear, rounded up."""
    if notional_value <= 0:
        return 0
    t = tier_for(tiers, notional_value)
    return ceil_div(mul(notional_value, t.mmr_ppm) - t.cum_ppm, PPM)


def initial(tiers: list[Tier], notional_value: int, leverage: int) -> int:
    """Initial margin of one position: notional / min(leverage setting, tier's max leverage)."""
    if notional_value <= 0:
        return 0
    t = tier_for(tiers, notional_value)
    return ceil_div(notional_value, min(leverage, t.max_leverage))


def order_hold(notional_value: int, leverage: int, fee_ppm: int) -> int:
    """Initial margin reserved by an open order: notional / leverage plus the worst fee."""
    return ceil_div(notional_value, leverage) + (ceil_div(mul(notional_value, fee_ppm), PPM)
                                                 if fee_ppm > 0 else 0)


def cushion_term(tiers: list[Tier], size: int, price: int, div: int) -> int:
    """One position's contribution to ``equity - maintenance`` at ``price`` (without its cost):
    the margin cushion is ``collateral - sum(cost) + sum(cushion_term)``. Each term depends on
    one market's price only, which is what makes the liquidation index possible."""
    return value(size, price, div) - maintenance(tiers, notional(size, price, div))


def threshold(tiers: list[Tier], size: int, div: int, target: int) -> int:
    """Liquidation-index key of a position: the price beyond which its cushion term may drop
    below ``target``. Longs must be re-checked when mark <= key, shorts when mark >= key.

    Solved exactly on the continuous (unrounded) term f(P); the caller adds 2 units to the
    target to absorb the rounding of ``cushion_term`` (floor value, ceil margin), so a mark on
    the safe side of the key provably keeps the term >= the caller's budget."""
    if size > 0:
        # f = N (1 - mmr) + cum, N = size * P / div: increasing in P; f(0) = 0
        if target <= 0:
            return 0  # the whole position can go to zero without breaching its budget
        lo = 0
        for t in tiers:
            # f*PPM = N*(PPM - mmr) + cum = target*PPM, solved in the tier that contains N
            num = mul(target, PPM) - t.cum_ppm
            den = PPM - t.mmr_ppm
            # lo * den <= num <= max_notional * den, without the big products
            if (lo <= num // den and -(-num // den) <= t.max_notional) or t is tiers[-1]:
                # P = N * div / size, rounded up: re-check at or below it
                # floor(x / (den * size)) == floor(floor(x / den) / size): one small divisor
                return -(mul_div(-num, div, 1, den) // size)
            lo = t.max_notional
        return ALWAYS_LONG
    # short: f*PPM = -N*(PPM + mmr) + cum: decreasing in P; f(0) = 0
    if target > 0:
        return ALWAYS_SHORT
    lo = 0
    n = -size
    for t in tiers:
        num = t.cum_ppm - mul(target, PPM)
        den = PPM + t.mmr_ppm
        if (lo <= num // den and -(-num // den) <= t.max_notional) or t is tiers[-1]:
            return mul_div(num, div, 1, den) // n  # re-check at or above it
        lo = t.max_notional
    return ALWAYS_SHORT
