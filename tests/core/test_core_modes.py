"""Market modes, recovery protection with timed return, reference price band, metadata changes."""

import pytest

from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from core_harness import LOT, PX, Harness, only, rejected


def mode(h: Harness, m: str, until: int = 0, market: str = "BTC-USDT") -> list[E.Event]:
    return h.do(C.SetMarketMode(market=market, mode=m, reason="test", until_ts=until))  # type: ignore[arg-type]


@pytest.mark.parametrize("m,limit_ok,post_ok,cancel_ok", [
    ("open", True, True, True),
    ("post_only", False, True, True),
    ("recovery", False, True, True),
    ("cancel_only", False, False, True),
    ("halted", False, False, True),
    ("closed", False, False, False),
])
def test_mode_table(m, limit_ok, post_ok, cancel_ok):
    h = Harness()
    resting = only(h.place(1, "buy", 1, PX - 100), E.OrderAccepted)[0].order_id
    until = h.ts + 10_000 if m == "recovery" else 0
    if m != "open":
        assert only(mode(h, m, until), E.ModeChanged)[0].new == m
    lim = h.place(2, "buy", 1, PX - 100)
    assert bool(only(lim, E.OrderAccepted)) == limit_ok, lim
    if not limit_ok:
        assert rejected(lim) == X.MARKET_MODE
    post = h.place(2, "buy", 1, PX - 100, post_only=True)
    assert bool(only(post, E.OrderAccepted)) == post_ok, post
    cx = h.do(C.CancelOrder(account=1, market="BTC-USDT", order_id=resting))
    if m == "closed":  # closing cancels everything; nothing is accepted after
        assert rejected(cx) == X.MARKET_MODE and not h.engine.orders
    else:
        assert bool(only(cx, E.OrderCanceled)) == cancel_ok
    assert h.engine.check_invariants() == []


def test_no_matching_in_post_only_modes():
    h = Harness()
    h.place(2, "sell", 1, PX)
    mode(h, "post_only")
    assert rejected(h.place(1, "buy", 1, PX, post_only=True)) == X.POST_ONLY_WOULD_CROSS
    assert rejected(h.place(1, "buy", 1, PX)) == X.MARKET_MODE


def test_recovery_returns_to_open_on_first_command_past_deadline():
    h = Harness()
    start = h.ts
    mode(h, "recovery", until=start + 1_000)
    assert h.engine.markets["BTC-USDT"].mode == "recovery"
    ev = h.do(C.PlaceOrder(account=1, market="BTC-USDT", side="buy", price=PX - 1, qty=LOT),
              dt=500)
    assert rejected(ev) == X.MARKET_MODE
    ev = h.do(C.Deposit(account=1, asset="USDT", amount=1), dt=600)  # any command passes time
    changed = only(ev, E.ModeChanged)
    assert changed and changed[0].new == "open" and changed[0].old == "recovery"
    assert only(h.place(1, "buy", 1, PX - 1), E.OrderAccepted)
    assert rejected(mode(h, "recovery", until=h.ts - 5)) == X.INVALID_ARGUMENT


def test_reference_band_in_post_only():
    h = Harness()
    h.do(C.SetReferencePrice(market="BTC-USDT", price=PX))
    mode(h, "post_only")
    # 5 bps band: a sell priced more than 5 bps below the fair price is refused
    assert rejected(h.place(2, "sell", 1, PX - PX * 6 // 10_000, post_only=True)) == X.PRICE_BAND
    assert only(h.place(2, "sell", 1, PX - PX * 4 // 10_000, post_only=True), E.OrderAccepted)
    assert rejected(h.place(1, "buy", 1, PX + PX * 6 // 10_000, post_only=True)) == X.PRICE_BAND
    mode(h, "open")
    assert only(h.place(1, "buy", 1, PX + PX * 6 // 10_000), E.OrderAccepted)


def test_halted_allows_cancel_only_and_cancel_only_allows_reduce_amend():
    h = Harness()
    oid = only(h.place(1, "buy", 4, PX - 10), E.OrderAccepted)[0].order_id
    mode(h, "cancel_only")
    assert rejected(h.do(C.AmendOrder(account=1, market="BTC-USDT", order_id=oid,
                                      new_price=PX - 11))) == X.MARKET_MODE
    assert only(h.do(C.AmendOrder(account=1, market="BTC-USDT", order_id=oid, new_qty=2 * LOT)),
                E.OrderAmended)
    mode(h, "halted")
    assert rejected(h.do(C.AmendOrder(account=1, market="BTC-USDT", order_id=oid,
                                      new_qty=LOT))) == X.MARKET_MODE
    assert only(h.do(C.CancelAll(account=1)), E.OrderCanceled)


def test_mode_change_validation():
    h = Harness()
    assert rejected(h.do(C.SetMarketMode(market="BTC-USDT", mode="weird", reason="x"))) == X.INVALID_ARGUMENT  # type: ignore[arg-type]
    assert rejected(h.do(C.SetMarketMode(market="BTC-USDT", mode="halted", reason=" "))) == X.INVALID_ARGUMENT
    assert rejected(h.do(C.SetMarketMode(market="NOPE", mode="halted", reason="x"))) == X.UNKNOWN_MARKET
    assert rejected(mode(h, "open")) == X.NO_CHANGE


def test_market_metadata_update_is_validated_and_applies_to_new_orders():
    h = Harness()
    assert rejected(h.do(C.UpdateMarket(market="BTC-USDT", tick_size=0))) == X.INVALID_MARKET_SPEC
    assert rejected(h.do(C.UpdateMarket(market="BTC-USDT", maker_fee_ppm=-900))) == X.INVALID_MARKET_SPEC
    assert rejected(h.do(C.UpdateMarket(market="BTC-USDT"))) == X.NO_CHANGE
    ev = h.do(C.UpdateMarket(market="BTC-USDT", tick_size=10, reason="coarser tick"))
    assert only(ev, E.MarketUpdated)[0].changes == {"tick_size": 10}
    assert rejected(h.place(1, "buy", 1, PX - 1)) == X.TICK_SIZE
    assert only(h.place(1, "buy", 1, PX - 10), E.OrderAccepted)
