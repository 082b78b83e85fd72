"""Rules every part of the core shares: refusals, guard violations, units, fee and hold rules.

A leaf module (it imports only the records and codes below it), so order entry, both ledgers
and the perpetual mechanics apply one rule each, from one place.
"""

from typing import Final

from bastion.core import errors as X
from bastion.core.arith import mul
from bastion.core.state import Market

#: ``Final``: compiled code inlines them (a plain module name is a dict lookup per use)
PPM: Final = 1_000_000
BPS: Final = 10_000
#: no timed change pending: the largest int compiled code compares natively (2**63 took the
#: boxed path on every command), far past any timestamp
NO_DEADLINE: Final = 2**62 - 1
MAX_CLIENT_ID: Final = 64
STP_MODES: Final = frozenset(("expire_taker", "expire_maker", "expire_both", "none"))


class Refused(Exception):
    """Raised by validation before any mutation; becomes the command's one Rejected event.

    ``field``, ``limit`` and ``value`` are the typed detail of a limit refusal (see
    ``events.Rejected``): the edge renders them in its own units and words instead of parsing
    ``message``."""

    def __init__(self, code: str, message: str, *, field: str = "", limit: int = 0,
                 value: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.limit = limit
        self.value = value


class GuardViolation(Exception):
    """An invariant failed mid-command: the engine halts the market instead of going on."""

    def __init__(self, market: str, guard: str, detail: str) -> None:
        super().__init__(detail)
        self.market = market
        self.guard = guard
        self.detail = detail


def int_in(value: object, low: int, high: int) -> bool:
    """An exact ``int`` (not a bool) in ``low..high``."""
    return type(value) is int and low <= value <= high


def ceil_div(a: int, b: int) -> int:
    """Ceiling of a / b for b > 0. Not ``-(-a // b)``: compiled code multiplies and divides a
    negative int through Python objects, a non-negative one natively."""
    return (a + b - 1) // b


def fee_amount(notional: int, rate_ppm: int) -> int:
    """Fees round toward zero, in the customer's favour, so holds can always cover them."""
    if rate_ppm >= 0:
        return mul(notional, rate_ppm) // PPM
    return -(mul(notional, -rate_ppm) // PPM)


def maker_rate(rate_ppm: int, cap_ppm: int) -> int:
    """The maker rate a fill charges: never above what the order's hold covered when it was
    placed (its maker rate, or nothing if that was a rebate), so a fee increase applies to new
    orders only and a fee holiday to all. One rule for every market kind."""
    cap = cap_ppm if cap_ppm > 0 else 0
    return rate_ppm if rate_ppm <= cap else cap


def spot_hold(mkt: Market, is_buy: bool, price: int, qty: int, fee_ppm: int) -> int:
    """Funds a spot order must reserve: base qty for a sell; for a buy the notional at its
    limit rounded up plus the worst fee. Each fill costs at most the hold it frees: the fill's
    notional at a price no worse than the limit is at most the rounded-up notional share, and
    its fee at most the fee share (docs/core.md, Units)."""
    if not is_buy:
        return qty
    notional = ceil_div(price * qty, mkt.price_div)
    return notional + (notional * fee_ppm // PPM if fee_ppm > 0 else 0)


def valid_qty(mkt: Market, qty: object) -> int:
    """The quantity, or the precise refusal (type, lot grid, min, max)."""
    if not int_in(qty, 1, X.MAX_INT):
        raise Refused(X.INVALID_QUANTITY, f"quantity must be a positive integer, got {qty!r}",
                      field="qty")
    assert isinstance(qty, int)
    if qty % mkt.lot_size:
        raise Refused(X.LOT_SIZE, f"quantity {qty} is not a multiple of lot size "
                                  f"{mkt.lot_size}", field="qty", limit=mkt.lot_size, value=qty)
    if qty < mkt.min_qty:
        raise Refused(X.MIN_QUANTITY, f"quantity {qty} below minimum {mkt.min_qty}",
                      field="qty", limit=mkt.min_qty, value=qty)
    if qty > mkt.max_qty:
        raise Refused(X.MAX_QUANTITY, f"quantity {qty} above maximum {mkt.max_qty}",
                      field="qty", limit=mkt.max_qty, value=qty)
    return qty


def valid_price(mkt: Market, price: object) -> int:
    """The price, or the precise refusal (type, tick grid)."""
    if not int_in(price, 1, X.MAX_INT):
        raise Refused(X.INVALID_PRICE, f"price must be a positive integer, got {price!r}",
                      field="price")
    assert isinstance(price, int)
    if price % mkt.tick_size:
        raise Refused(X.TICK_SIZE, f"price {price} is not a multiple of tick size "
                                   f"{mkt.tick_size}", field="price", limit=mkt.tick_size,
                      value=price)
    return price


def check_ref_band(mkt: Market, is_buy: bool, price: int) -> None:
    """In post-only and recovery modes, refuse orders priced far through the fair price
    (the Paradex 2026 fix: aggressive post-only orders moved prices during reopening)."""
    ref = mkt.ref_price or mkt.last_price
    if not ref:
        return
    band = mkt.ref_band_bps
    if is_buy and price * BPS > ref * (BPS + band):
        raise Refused(X.PRICE_BAND, f"buy at {price} is more than {band} bps above "
                                    f"reference {ref}", field="price",
                      limit=ref * (BPS + band) // BPS, value=price)
    if not is_buy and price * BPS < ref * (BPS - band):
        raise Refused(X.PRICE_BAND, f"sell at {price} is more than {band} bps below "
                                    f"reference {ref}", field="price",
                      limit=-(-ref * (BPS - band) // BPS), value=price)
