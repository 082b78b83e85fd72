"""Validation of instrument metadata: every market spec, created or migrated, passes here."""

from bastion.core import commands as C
from bastion.core.errors import MAX_INT

MAX_FEE_PPM = 100_000


def _ok(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def validate_market(spec: C.CreateMarket, base_decimals: int, quote_decimals: int) -> str:
    """Return the first problem with a spot market spec, or ``""`` if it is sound."""
    name = spec.market
    if not isinstance(name, str) or not 1 <= len(name) <= 32 or not all(
        ch.isalnum() or ch in "-_" for ch in name
    ):
        return "market id must be 1-32 letters, digits, '-' or '_'"
    if spec.base == spec.quote:
        return "base and quote must differ"
    if not _ok(spec.price_decimals, 0, 18):
        return "price_decimals must be in 0..18"
    exponent = spec.price_decimals + base_decimals - quote_decimals
    if exponent < 0:
        return "price_decimals + base decimals must be >= quote decimals"
    for field in ("tick_size", "lot_size", "min_qty", "max_qty"):
        if not _ok(getattr(spec, field), 1, MAX_INT):
            return f"{field} must be a positive integer"
    if (spec.tick_size * spec.lot_size) % 10**exponent:
        return (f"tick_size x lot_size must be a multiple of 10^{exponent} so every notional "
                "is a whole number of quote units")
    if spec.min_qty % spec.lot_size or spec.max_qty % spec.lot_size:
        return "min_qty and max_qty must be multiples of lot_size"
    if spec.max_qty < spec.min_qty:
        return "max_qty must be >= min_qty"
    if not _ok(spec.min_notional, 0, MAX_INT):
        return "min_notional must be a non-negative integer"
    if not _ok(spec.taker_fee_ppm, 0, MAX_FEE_PPM):
        return f"taker_fee_ppm must be in 0..{MAX_FEE_PPM}"
    if not _ok(spec.maker_fee_ppm, -spec.taker_fee_ppm, spec.taker_fee_ppm):
        return "maker_fee_ppm must be within +-taker_fee_ppm (a rebate never exceeds the fee)"
    if not _ok(spec.market_band_bps, 1, 9_999) or not _ok(spec.ref_band_bps, 1, 9_999):
        return "price bands must be in 1..9999 bps"
    return ""
