"""Structured rejections: a limit refusal carries the field at fault, the value the command
asked for and the bound it crossed, consistent with the market's own parameters."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.codec import decode_event, encode_event
from bastion.demo import BTC_USDT
from core_harness import LOT, PX, Harness

#: codes that must always say which field and which bound
DETAILED = {X.LOT_SIZE: "qty", X.MIN_QUANTITY: "qty", X.MAX_QUANTITY: "qty",
            X.TICK_SIZE: "price", X.MIN_NOTIONAL: "notional", X.INSUFFICIENT_FUNDS: "available",
            X.PRICE_BAND: "price"}


SEEN: set[str] = set()


def _place(h: Harness, side: str, qty: int, price: int = PX,
           market: str = BTC_USDT) -> list[E.Event]:
    return h.do(C.PlaceOrder(account=1, market=market, side=side,  # type: ignore[arg-type]
                             price=price, qty=qty))


def _one_rejection(events: list[E.Event]) -> E.Rejected | None:
    rej = [e for e in events if isinstance(e, E.Rejected)]
    return rej[0] if rej else None


@settings(max_examples=300, deadline=None)
@example(qty=LOT + 1, price=PX, side="buy")              # LOT_SIZE
@example(qty=LOT, price=PX, side="sell")                 # MIN_QUANTITY
@example(qty=10**11 + LOT, price=PX, side="sell")        # MAX_QUANTITY
@example(qty=5 * LOT, price=PX + 1, side="buy")          # TICK_SIZE
@example(qty=5 * LOT, price=100, side="buy")             # MIN_NOTIONAL
@example(qty=10**11, price=PX, side="buy")               # INSUFFICIENT_FUNDS
@given(qty=st.one_of(st.integers(1, 10 * LOT), st.integers(1, 2 * 10**11),
                     st.integers(1, 8).map(lambda n: n * LOT)),
       price=st.one_of(st.integers(1, 2 * PX), st.integers(1, 10**12),
                 st.integers(PX // 100 - 50, PX // 100 + 50).map(lambda p: p * 100)),
       side=st.sampled_from(["buy", "sell"]))
def test_limit_refusals_carry_field_limit_and_value(qty: int, price: int, side: str) -> None:
    h = Harness()
    # a coarser grid than the demo's, so ticks and the minimum are bounds of their own
    h.do(C.UpdateMarket(market=BTC_USDT, tick_size=100, min_qty=5 * LOT, reason="grid"))
    mkt = h.engine.markets[BTC_USDT]
    assert mkt.tick_size == 100
    base_avail, _ = h.bal(1, mkt.base)
    quote_avail, _ = h.bal(1, mkt.quote)
    r = _one_rejection(_place(h, side, qty, price))
    if r is None:
        return
    if r.code not in DETAILED:
        assert r.field == ""
        return
    SEEN.add(r.code)
    assert r.field == DETAILED[r.code], r
    if r.code == X.LOT_SIZE:
        assert (r.value, r.limit) == (qty, mkt.lot_size) and qty % r.limit
    elif r.code == X.MIN_QUANTITY:
        assert (r.value, r.limit) == (qty, mkt.min_qty) and qty < r.limit
    elif r.code == X.MAX_QUANTITY:
        assert (r.value, r.limit) == (qty, mkt.max_qty) and qty > r.limit
    elif r.code == X.TICK_SIZE:
        assert (r.value, r.limit) == (price, mkt.tick_size) and price % r.limit
    elif r.code == X.MIN_NOTIONAL:
        assert r.value == price * qty // mkt.price_div < r.limit == mkt.min_notional
    elif r.code == X.INSUFFICIENT_FUNDS:
        assert r.limit == (quote_avail if side == "buy" else base_avail) < r.value
    else:
        assert r.value == price and ((price > r.limit) if side == "buy" else price < r.limit)


def test_the_property_met_the_order_bounds() -> None:
    """Runs after the property (file order): its inputs reached each order-bound refusal."""
    assert {X.LOT_SIZE, X.MIN_QUANTITY, X.MAX_QUANTITY, X.TICK_SIZE, X.MIN_NOTIONAL,
            X.INSUFFICIENT_FUNDS} <= SEEN, SEEN


def test_detail_set_only_where_a_bound_decided() -> None:
    h = Harness()
    r = _one_rejection(_place(h, "buy", LOT, market="NOPE"))
    assert r is not None and r.code == X.UNKNOWN_MARKET and (r.field, r.limit, r.value) == (
        "", 0, 0)
    r = _one_rejection(_place(h, "buy", 0))
    assert r is not None and r.code == X.INVALID_QUANTITY and r.field == "qty"


def test_detail_survives_the_event_codec() -> None:
    """The journal/stream codec keeps the detail; an event without it encodes as before."""
    h = Harness()
    r = _one_rejection(_place(h, "buy", LOT + 1))
    assert r is not None and r.code == X.LOT_SIZE
    back = decode_event(encode_event(r))
    assert back == r and isinstance(back, E.Rejected) and back.limit == LOT
    plain = E.Rejected(seq=1, ts=1, code=X.UNKNOWN_ORDER, message="x")
    assert b"field" not in encode_event(plain) and decode_event(encode_event(plain)) == plain
