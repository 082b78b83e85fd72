"""Decimal strings at the edge <-> integer units in the core, exactly (no floats, no rounding).

A value that is not exactly representable in the target unit is refused, never rounded: a
client that sends 0.000000001 BTC must learn it, not trade a different amount.
"""

from __future__ import annotations

from bastion.api.errors import ApiError
from bastion.core.errors import MAX_INT

MAX_TEXT = 40
_POW10: tuple[int, ...] = tuple(10**i for i in range(MAX_TEXT + 1))


def _pow10(n: int) -> int:
    return _POW10[n] if n <= MAX_TEXT else int(10**n)


def to_units(text: object, decimals: int, code: str, what: str, *,
             allow_zero: bool = False) -> int:
    """Parse a plain decimal string (``"12"``, ``"0.0015"``) into integer units of
    ``10**-decimals``. Raises ``ApiError(code)`` for signs, exponents, too many decimals or
    values out of range."""
    if not isinstance(text, str):
        if not isinstance(text, int) or isinstance(text, bool):
            raise ApiError(code, f"{what} must be a decimal string such as \"1.25\"")
        text = str(text)
    if not text or len(text) > MAX_TEXT:
        raise ApiError(code, f"{what} must be a decimal string such as \"1.25\"")
    whole, dot, frac = text.partition(".")
    if not whole and not frac:
        raise ApiError(code, f"{what} {text!r} is not a decimal number")
    if not (whole == "" or whole.isascii() and whole.isdigit()) or \
            not (frac == "" or frac.isascii() and frac.isdigit()) or (dot and not frac):
        raise ApiError(code, f"{what} {text!r} is not a plain non-negative decimal number")
    stripped = frac.rstrip("0")
    places = len(stripped)
    if places > decimals:
        raise ApiError(code, f"{what} {text} has more than {decimals} decimal places",
                       field="decimals", limit=decimals, value=places,
                       limit_text=str(decimals), value_text=str(places))
    # order entry parses two of these per order: powers from a table, no padding
    value: int = int(whole) * _pow10(decimals) if whole else 0
    if places:
        value += int(stripped) * _pow10(decimals - places)
    if value > MAX_INT:
        raise ApiError(code, f"{what} {text} is too large")
    if value == 0 and not allow_zero:
        raise ApiError(code, f"{what} must be greater than zero")
    return value


#: ``from_units(0, d)`` by ``d``: a new order renders three or four zero amounts
_ZEROS = tuple("0." + "0" * d if d else "0" for d in range(MAX_TEXT + 1))


def from_units(value: int, decimals: int) -> str:
    """Exact decimal string with ``decimals`` places (``12345, 2 -> "123.45"``)."""
    if not value and 0 <= decimals <= MAX_TEXT:
        return _ZEROS[decimals]
    if decimals == 0:
        return str(value)
    if value < 0:
        return "-" + from_units(-value, decimals)
    digits = str(value)
    if len(digits) > decimals:
        return f"{digits[:-decimals]}.{digits[-decimals:]}"
    return "0." + digits.rjust(decimals, "0")


def trim(text: str) -> str:
    """Drop insignificant trailing zeros (``"1.2300" -> "1.23"``, ``"5.000" -> "5"``)."""
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text
