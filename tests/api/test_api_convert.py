"""Decimal strings <-> integer units at the edge, against Python's ``decimal`` as reference
(both run per order on every surface, so they are written for speed; this keeps them exact)."""

from __future__ import annotations

from decimal import Context, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.api.convert import from_units, to_units
from bastion.api.errors import ApiError
from bastion.core import errors as X
from bastion.core.errors import MAX_INT

_decimals = st.integers(min_value=0, max_value=18)
_EXACT = Context(prec=100)  # no rounding at these sizes


@settings(max_examples=500, deadline=None)
@given(value=st.integers(min_value=-(10**30), max_value=10**30), decimals=_decimals)
def test_from_units_is_the_exact_decimal(value: int, decimals: int) -> None:
    assert from_units(value, decimals) == format(Decimal(value).scaleb(-decimals, _EXACT),
                                                 f".{decimals}f")


@settings(max_examples=500, deadline=None)
@given(value=st.integers(min_value=1, max_value=MAX_INT), decimals=_decimals,
       zeros=st.integers(min_value=0, max_value=3))
def test_to_units_reads_back_what_from_units_wrote(value: int, decimals: int,
                                                   zeros: int) -> None:
    text = from_units(value, decimals) + ("0" * zeros if decimals else "")
    assert to_units(text, decimals, X.INVALID_PRICE, "price") == value


@settings(max_examples=300, deadline=None)
@given(whole=st.integers(min_value=0, max_value=10**12), frac=st.text("0123456789", max_size=12),
       decimals=_decimals)
def test_to_units_refuses_what_it_cannot_hold_exactly(whole: int, frac: str,
                                                      decimals: int) -> None:
    text = f"{whole}.{frac}" if frac else str(whole)
    exact = Decimal(text).scaleb(decimals, _EXACT)
    try:
        got = to_units(text, decimals, X.INVALID_QUANTITY, "quantity")
    except ApiError as err:
        assert err.code == X.INVALID_QUANTITY
        assert exact != exact.to_integral_value() or exact == 0 or exact > MAX_INT
        return
    assert got == exact


@pytest.mark.parametrize("text", ["", ".", "1e5", "-1", "+1", " 1", "1_0", "１", "1.2.3", "5.",
                                  "9" * 41])
def test_to_units_refuses_anything_but_plain_digits(text: str) -> None:
    with pytest.raises(ApiError):
        to_units(text, 8, X.INVALID_QUANTITY, "quantity")


def test_to_units_takes_str_subclasses_and_ints_not_bools() -> None:
    class Text(str):
        pass

    assert to_units(Text("1.5"), 2, X.INVALID_PRICE, "price") == 150
    assert to_units(7, 2, X.INVALID_PRICE, "price") == 700
    for bad in (True, 1.5, None, b"1"):
        with pytest.raises(ApiError):
            to_units(bad, 2, X.INVALID_PRICE, "price")
