"""Exact integer products that stay in a machine word when they fit.

Compiled with mypyc, ``a * b`` on two ``int`` is native only when both operands lie in
[0, 2**30); any other product (a money amount is 10**8 units per coin, so most notionals, fees
and margins) boxes both operands and calls ``PyNumber_Multiply``, about 600 instructions with
allocations. ``mul`` multiplies in 64 bits whenever the exact product fits, and falls back to
Python ints otherwise, so results are identical in the compiled and the pure build (where the
``i64`` annotations are plain ints). A leaf module: the whole core uses it.
"""

from typing import Final

from mypy_extensions import i64

#: operands of magnitude below this multiply in one machine word without a check
_HALF: Final = 1 << 31
#: the largest magnitude mypyc keeps unboxed (a tagged short int), and an ``i64`` holds
_LIMIT: Final = (1 << 62) - 1
#: whether this module runs compiled (its file is the extension, not the source): interpreted,
#: Python's own ``*`` and ``//`` are the fastest exact way, and the word checks only cost
_NATIVE: Final = not __file__.endswith(".py")
#: ``_mul64``'s answer when the product does not fit (no product it returns has this value;
#: still a tagged short int, so compiled code compares it as a constant)
_WIDE: Final = -(1 << 62)


def _mul64(a: int, b: int) -> i64:
    """``a * b`` if its magnitude is at most ``_LIMIT`` (checked before multiplying), else
    ``_WIDE``."""
    if -_HALF < a < _HALF and -_HALF < b < _HALF:
        x: i64 = a
        y: i64 = b
        return x * y
    if -_LIMIT <= a <= _LIMIT and -_LIMIT <= b <= _LIMIT:
        x2: i64 = a
        y2: i64 = b
        ax = x2 if x2 >= 0 else -x2
        ay = y2 if y2 >= 0 else -y2
        if ax == 0 or ay <= _LIMIT // ax:
            return x2 * y2
    return _WIDE


def mul(a: int, b: int) -> int:
    """``a * b``, exactly; in a machine word whenever the product fits one."""
    if not _NATIVE:
        return a * b
    p = _mul64(a, b)
    if p != _WIDE:  # not a conditional expression: compiled, that would box both sides
        return p
    return a * b


def mul_div(a: int, b: int, c: int, d: int) -> int:
    """``a * b * c // d`` (b, c >= 0, d > 0), exactly, without the product: with a = q*d + r
    and r*b = q2*d + r2, the result is q*b*c + q2*c + r2*c // d. When b, c, d are below 2**31
    (a re-key's funding reach, a liquidation key, a partial fill's hold) every step but
    q*b*c stays below 2**62 and runs in a machine word, whether or not the product would fit
    one; otherwise in a word if the product fits one, else in Python ints (~100 times slower)."""
    if not _NATIVE:
        return a * b * c // d
    if 0 < d < _HALF and 0 <= b < _HALF and 0 <= c < _HALF and -_LIMIT <= a <= _LIMIT:
        x: i64 = a
        d64: i64 = d
        b64: i64 = b
        c64: i64 = c
        q: i64 = x // d64
        rb = (x - q * d64) * b64  # r < d
        q2 = rb // d64  # < b
        tail = q2  # c == 1 (a fill's share): r2 * c < d
        if c64 != 1:
            tail = q2 * c64 + (rb - q2 * d64) * c64 // d64  # < b*c: one word, no overflow
        bc = b64 * c64
        # |q| <= ceil(_LIMIT / d): b*c <= d (a fill's share, a key) bounds q*b*c, no division
        if bc <= d64 or (q if q >= 0 else -q) <= _LIMIT // bc:
            return q * bc + tail  # |q*b*c| < _LIMIT + d, 0 <= tail < b*c: no overflow
    p = _mul64(a, b)  # a wide divisor or factor: the product may still fit a word
    if p != _WIDE and c != 1:
        p = _mul64(p, c)
    if p != _WIDE and d <= _LIMIT:
        return p // d
    return _mul_div_wide(a, b, c, d)


def _mul_div_wide(a: int, b: int, c: int, d: int) -> int:
    """``mul_div``'s steps in Python ints."""
    q = a // d
    r = a - mul(q, d)  # not divmod: compiled, that is a generic call returning a boxed tuple
    rb = mul(r, b)
    q2 = rb // d
    return mul(mul(q, b), c) + mul(q2, c) + mul(rb - mul(q2, d), c) // d
