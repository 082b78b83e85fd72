"""Decimal strings at the edge <-> integer units in the core, exactly (no floats, no rounding).

A value that is not exactly representable in the target unit is refused, never rounded: a
client that sends 0.000000001 BTC must learn it, not trade a different amount.
"""

from __future__ import annotations

from bastion.api.errors import ApiError
from bastion.core.errors import MAX_INT

MAX_TEXT = 40


def to_units(text: object, decimals: int, code: str, what: str, *,
             allow_zero: bool = False) -> int:
    """Parse a plain decimal string (``"12"``, ``"0.0015"``) into integer units of
    ``10**-decimals``. Raises ``ApiError(code)`` for signs, exponents, too many decimals or
    values out of range."""
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str) or not text or len(text) > MAX_TEXT:
        raise ApiError(code, f"{what} must be a decimal string such as \"1.25\"")
    whole, dot, frac = text.partition(".")
    if not whole and not frac:
        raise ApiError(code, f"{what} {text!r} is not a decimal number")
    if not (whole == "" or whole.isascii() and whole.isdigit()) or \
            not (frac == "" or frac.isascii() and frac.isdigit()) or (dot and not frac):
        raise ApiError(code, f"{what} {text!r} is not a plain non-negative decimal number")
    stripped = frac.rstrip("0")
    if len(stripped) > decimals:
        raise ApiError(code, f"{what} {text} has more than {decimals} decimal places",
                       field="decimals", limit=decimals, value=len(stripped),
                       limit_text=str(decimals), value_text=str(len(stripped)))
    value: int = int(whole or "0") * 10**decimals + (int(stripped.ljust(decimals, "0"))
                                                     if decimals else 0)
    if value > MAX_INT:
        raise ApiError(code, f"{what} {text} is too large")
    if value == 0 and not allow_zero:
        raise ApiError(code, f"{what} must be greater than zero")
    return value


def from_units(value: int, decimals: int) -> str:
    """Exact decimal string with ``decimals`` places (``12345, 2 -> "123.45"``)."""
    if decimals == 0:
        return str(value)
    sign = "-" if value < 0 else ""
    digits = str(abs(value)).rjust(decimals + 1, "0")
    return f"{sign}{digits[:-decimals]}.{digits[-decimals:]}"


def trim(text: str) -> str:
    """Drop insignificant trailing zeros (``"1.2300" -> "1.23"``, ``"5.000" -> "5"``)."""
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text
