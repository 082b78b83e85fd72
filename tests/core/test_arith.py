"""``arith.mul``/``mul_div`` equal Python's exact products in both builds: the machine-word
path (compiled) must give the same answer as the big-int path, at and around every bound."""

from hypothesis import example, given, settings
from hypothesis import strategies as st

from bastion import corebuild
from bastion.core import arith
from bastion.core.arith import mul, mul_div

#: magnitudes around the bounds the compiled code switches on: 2**31 (both operands small),
#: 2**62 (a tagged short int, the product limit) and 2**63 (an i64)
EDGES = [0, 1, 2, 3, 2**30, 2**31 - 1, 2**31, 2**31 + 1, 2**32, 3_037_000_499, 3_037_000_500,
         2**61, 2**62 - 1, 2**62, 2**62 + 1, 2**63 - 1, 2**63, 2**64, 10**30]
edge = st.sampled_from(EDGES).flatmap(lambda m: st.sampled_from([m, -m]))
wide = st.one_of(edge, st.integers(-(2**70), 2**70), st.integers(-(2**33), 2**33))


def test_the_word_path_runs_where_compiled():
    """Compiled, the checks below exercise the machine-word path; pure, Python's ``*``."""
    assert (corebuild.KIND == "compiled") == arith._NATIVE


def test_mul_at_every_bound():
    for a in EDGES:
        for b in EDGES:
            for sa in (1, -1):
                for sb in (1, -1):
                    assert mul(sa * a, sb * b) == sa * a * sb * b, (sa * a, sb * b)


@settings(max_examples=500)
@given(a=wide, b=wide)
def test_mul_is_the_exact_product(a, b):
    assert mul(a, b) == a * b


@settings(max_examples=500)
@given(a=wide, b=st.one_of(edge.map(abs), st.integers(0, 2**40)),
       c=st.one_of(st.just(1), edge.map(abs), st.integers(0, 10**9)),
       d=st.one_of(edge.map(abs).filter(bool), st.integers(1, 2**64)))
def test_mul_div_is_the_exact_floor(a, b, c, d):
    assert mul_div(a, b, c, d) == a * b * c // d


@given(a=st.integers(-(10**30), 10**30), b=st.integers(0, 10**20), c=st.integers(0, 10**20),
       d=st.integers(1, 10**20))
def test_mul_div_without_the_product(a, b, c, d):
    assert mul_div(a, b, c, d) == a * b * c // d


@settings(max_examples=300)
@given(a=st.integers(-(2**62) + 1, 2**62 - 1), b=st.integers(0, 2**31 - 1),
       c=st.integers(0, 2**31 - 1), d=st.integers(1, 2**31 - 1))
@example(a=2**62 - 1, b=2**31 - 1, c=2**31 - 1, d=2**31 - 1)
@example(a=-(2**62) + 1, b=2**31 - 1, c=2**31 - 1, d=2**31 - 1)
@example(a=-(2**62) + 1, b=2**31 - 1, c=2**31 - 1, d=1)
@example(a=10**11, b=10**8, c=10**9, d=3 * 10**7)  # a re-key's funding reach
@example(a=120_000_000_000, b=100, c=10**9, d=3 * 10**7)  # and with this venue's divisor
@example(a=-850_000_000_000_000_000, b=100, c=1, d=990_000)  # a liquidation key: a*b past a word
@example(a=2**62 - 1, b=1, c=1, d=1)  # q*b*c at the word's limit
@example(a=-(2**62) + 1, b=1, c=1, d=1)
@example(a=2**62 - 1, b=2, c=1, d=1)  # q*b*c one past it: the wide steps
@example(a=2**62 - 1, b=3, c=1, d=3)  # q*b*c below it, the tail on top
@example(a=2**62 - 3, b=2**31 - 1, c=2**31 - 1, d=2**31 - 2)  # the largest tail
@example(a=-(2**62) + 1, b=2**31 - 1, c=1, d=2**31 - 1)  # b*c == d, q rounded down past a/d
@example(a=5, b=0, c=7, d=3)
@example(a=-5, b=7, c=0, d=3)
def test_mul_div_small_divisor_steps(a, b, c, d):
    """Operands of a word with b, c, d below 2**31 (the liquidation index's reach and key, a
    fill's hold): every step of the decomposition runs in a word, the product past one or not,
    and q*b*c falls back to Python ints one past the word's limit."""
    assert mul_div(a, b, c, d) == a * b * c // d
