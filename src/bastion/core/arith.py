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
    """``a * b * c // d`` (b, c >= 0, d > 0), exactly. In a machine word when the product
    fits one; otherwise without the product (a heap-allocated big int, ~100 times slower):
    with a = q*d + r and r*b = q2*d + r2, the result is q*b*c + q2*c + r2*c // d, and every
    step stays below ``d * max(b, c)`` (and the result)."""
    if not _NATIVE:
        return a * b * c // d
    p = _mul64(a, b)
    if p != _WIDE and c != 1:
        p = _mul64(p, c)
    if p != _WIDE and d <= _LIMIT:
        return p // d
    if d < _HALF and b < _HALF and c < _HALF and -_LIMIT <= a <= _LIMIT:
        # the same steps, each in a word: r, r2 < d < 2**31 and q2 < b
        x: i64 = a
        d64: i64 = d
        b64: i64 = b
        c64: i64 = c
        q64 = x // d64
        rb64 = (x - q64 * d64) * b64
        q2_64 = rb64 // d64
        tail: int = q2_64 * c64 + (rb64 - q2_64 * d64) * c64 // d64  # int: the sum may be wide
        return mul(mul(q64, b), c) + tail
    q = a // d
    r = a - mul(q, d)  # not divmod: compiled, that is a generic call returning a boxed tuple
    rb = mul(r, b)
    q2 = rb // d
    return mul(mul(q, b), c) + mul(q2, c) + mul(rb - mul(q2, d), c) // d
