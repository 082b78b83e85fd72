"""Unit tests for order entry, matching, holds, fees, amend/cancel and self-trade prevention."""

from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.rules import fee_amount, spot_hold
from core_harness import LOT, PX, Harness, only, rejected


def test_resting_then_full_fill_moves_funds_and_fees():
    h = Harness()
    usdt1, btc2 = h.bal(1, "USDT"), h.bal(2, "BTC")
    btc1, usdt2 = h.bal(1, "BTC"), h.bal(2, "USDT")
    ev = h.place(2, "sell", 10)
    assert only(ev, E.OrderAccepted) and not only(ev, E.Trade)
    assert h.bal(2, "BTC") == (btc2[0] - 10 * LOT, 10 * LOT)
    ev = h.place(1, "buy", 10, PX + 100)
    (trade,) = only(ev, E.Trade)
    assert trade.price == PX and trade.qty == 10 * LOT  # maker's price
    notional = PX * 10 * LOT // 100
    assert trade.taker_fee == fee_amount(notional, 500) and trade.maker_fee == fee_amount(notional, 200)
    assert h.bal(1, "USDT") == (usdt1[0] - notional - trade.taker_fee, 0)
    assert h.bal(1, "BTC")[0] == btc1[0] + 10 * LOT
    assert h.bal(2, "USDT")[0] == usdt2[0] + notional - trade.maker_fee
    assert h.bal(2, "BTC") == (btc2[0] - 10 * LOT, 0)
    assert h.engine.fees["USDT"] == trade.taker_fee + trade.maker_fee
    assert not h.engine.orders and h.engine.check_invariants() == []


def test_price_time_priority_and_partial_fills():
    h = Harness()
    a = only(h.place(2, "sell", 5, PX + 2), E.OrderAccepted)[0].order_id
    b = only(h.place(3, "sell", 5, PX + 1), E.OrderAccepted)[0].order_id
    c = only(h.place(2, "sell", 5, PX + 1), E.OrderAccepted)[0].order_id
    trades = only(h.place(1, "buy", 12, PX + 2), E.Trade)
    assert [(t.maker_order, t.qty // LOT, t.price) for t in trades] == [
        (b, 5, PX + 1), (c, 5, PX + 1), (a, 2, PX + 2)]
    assert h.engine.orders[a].remaining == 3 * LOT
    assert h.engine.check_invariants() == []


def test_buyer_hold_released_when_filled_below_limit():
    h = Harness()
    h.place(2, "sell", 4, PX)
    ev = h.place(1, "buy", 10, PX + 1000)
    oid = only(ev, E.OrderAccepted)[0].order_id
    order = h.engine.orders[oid]
    assert order.remaining == 6 * LOT
    assert order.hold == spot_hold(h.engine.markets["BTC-USDT"], True, PX + 1000, 6 * LOT, 500)
    assert h.bal(1, "USDT")[1] == order.hold
    assert h.engine.check_invariants() == []


def test_ioc_remainder_expires_and_fok_is_all_or_nothing():
    h = Harness()
    h.place(2, "sell", 3, PX)
    ev = h.place(1, "buy", 5, PX, tif="IOC")
    assert [t.qty for t in only(ev, E.Trade)] == [3 * LOT]
    (cx,) = only(ev, E.OrderCanceled)
    assert cx.reason == "IOC" and cx.remaining == 2 * LOT
    h.place(2, "sell", 3, PX)
    assert rejected(h.place(1, "buy", 5, PX, tif="FOK")) == X.FOK_NOT_FILLABLE
    assert len(h.engine.orders) == 1
    ev = h.place(1, "buy", 3, PX, tif="FOK")
    assert sum(t.qty for t in only(ev, E.Trade)) == 3 * LOT and not h.engine.orders
    assert h.engine.check_invariants() == []


def test_post_only_refused_when_crossing():
    h = Harness()
    h.place(2, "sell", 3, PX)
    assert rejected(h.place(1, "buy", 1, PX, post_only=True)) == X.POST_ONLY_WOULD_CROSS
    assert only(h.place(1, "buy", 1, PX - 1, post_only=True), E.OrderAccepted)


def test_market_order_bounded_by_band_and_funds():
    h = Harness(accounts=[1, 2])
    h.place(2, "sell", 5, PX)
    h.place(2, "sell", 5, PX * 2)  # far outside the 5% band
    ev = h.do(C.PlaceOrder(account=1, market="BTC-USDT", side="buy", order_type="market", qty=10 * LOT))
    assert sum(t.qty for t in only(ev, E.Trade)) == 5 * LOT
    assert only(ev, E.OrderCanceled)[0].reason == "IOC"
    # a poor account: the market buy is clipped to what it can pay
    h.do(C.Deposit(account=9, asset="USDT", amount=PX * 3 * LOT // 100 * 106 // 100))
    h.place(2, "sell", 20, PX)
    ev = h.do(C.PlaceOrder(account=9, market="BTC-USDT", side="buy", order_type="market", qty=20 * LOT))
    filled = sum(t.qty for t in only(ev, E.Trade))
    assert 0 < filled < 20 * LOT
    assert h.bal(9, "USDT")[0] >= 0 and h.engine.check_invariants() == []
    h2 = Harness()
    assert rejected(h2.do(C.PlaceOrder(account=1, market="BTC-USDT", side="buy",
                                       order_type="market", qty=LOT))) == X.NO_LIQUIDITY


def test_insufficient_funds_and_holds():
    h = Harness()
    h.do(C.Deposit(account=7, asset="USDT", amount=10**9))
    assert rejected(h.place(7, "buy", 100)) == X.INSUFFICIENT_FUNDS
    assert rejected(h.place(7, "sell", 1)) == X.INSUFFICIENT_FUNDS
    assert h.bal(7, "USDT") == (10**9, 0)


def test_cancel_releases_hold_and_unknown_order():
    h = Harness()
    before = h.bal(1, "USDT")
    oid = only(h.place(1, "buy", 2, PX - 10, client_id="abc"), E.OrderAccepted)[0].order_id
    assert rejected(h.do(C.CancelOrder(account=2, market="BTC-USDT", order_id=oid))) == X.UNKNOWN_ORDER
    ev = h.do(C.CancelOrder(account=1, market="BTC-USDT", client_id="abc"))
    assert only(ev, E.OrderCanceled)[0].order_id == oid
    assert h.bal(1, "USDT") == before
    assert rejected(h.do(C.CancelOrder(account=1, market="BTC-USDT", order_id=oid))) == X.UNKNOWN_ORDER
    assert h.engine.check_invariants() == []


def test_duplicate_client_id_only_while_open():
    h = Harness()
    h.place(1, "buy", 1, PX - 10, client_id="x")
    assert rejected(h.place(1, "buy", 1, PX - 10, client_id="x")) == X.DUPLICATE_CLIENT_ID
    assert only(h.place(2, "buy", 1, PX - 10, client_id="x"), E.OrderAccepted)  # other account
    h.do(C.CancelOrder(account=1, market="BTC-USDT", client_id="x"))
    assert only(h.place(1, "buy", 1, PX - 10, client_id="x"), E.OrderAccepted)


def test_amend_reduce_keeps_priority_other_changes_lose_it():
    h = Harness()
    a = only(h.place(1, "buy", 5, PX), E.OrderAccepted)[0].order_id
    b = only(h.place(2, "buy", 5, PX), E.OrderAccepted)[0].order_id
    ev = h.do(C.AmendOrder(account=1, market="BTC-USDT", order_id=a, new_qty=3 * LOT))
    assert only(ev, E.OrderAmended)[0].kept_priority
    assert only(h.place(3, "sell", 1, PX), E.Trade)[0].maker_order == a
    ev = h.do(C.AmendOrder(account=1, market="BTC-USDT", order_id=a, new_qty=6 * LOT))
    assert not only(ev, E.OrderAmended)[0].kept_priority
    assert only(h.place(3, "sell", 1, PX), E.Trade)[0].maker_order == b
    assert rejected(h.do(C.AmendOrder(account=1, market="BTC-USDT", order_id=a))) == X.NO_CHANGE
    assert rejected(h.do(C.AmendOrder(account=1, market="BTC-USDT", order_id=a,
                                      new_qty=LOT))) == X.INVALID_QUANTITY  # <= filled
    assert h.engine.check_invariants() == []


def test_amend_to_crossing_price_matches():
    h = Harness()
    h.place(2, "sell", 2, PX + 5)
    a = only(h.place(1, "buy", 2, PX), E.OrderAccepted)[0].order_id
    ev = h.do(C.AmendOrder(account=1, market="BTC-USDT", order_id=a, new_price=PX + 5))
    assert only(ev, E.Trade)[0].qty == 2 * LOT and not h.engine.orders
    assert h.engine.check_invariants() == []


def test_self_trade_prevention_modes():
    h = Harness()
    m = only(h.place(1, "sell", 2, PX), E.OrderAccepted)[0].order_id
    ev = h.place(1, "buy", 2, PX)  # account default expire_taker
    assert not only(ev, E.Trade) and only(ev, E.OrderCanceled)[0].reason == X.SELF_TRADE
    assert m in h.engine.orders
    ev = h.place(1, "buy", 2, PX, stp="expire_maker")
    assert only(ev, E.OrderCanceled)[0].order_id == m and not only(ev, E.Trade)
    m2 = only(h.place(1, "sell", 2, PX + 1), E.OrderAccepted)[0].order_id
    h.do(C.SetAccountSTP(account=1, stp="expire_both"))
    ev = h.place(1, "buy", 2, PX + 1)
    assert {c.order_id for c in only(ev, E.OrderCanceled)} >= {m2}
    assert len(only(ev, E.OrderCanceled)) == 2
    assert h.engine.check_invariants() == []


def test_cancel_all_scopes():
    h = Harness()
    for acct in (1, 2):
        h.place(acct, "buy", 1, PX - 10)
        h.do(C.PlaceOrder(account=acct, market="ETH-USDT", side="buy", price=300_000, qty=10_000))
    ev = h.do(C.CancelAll(account=1, market="BTC-USDT"))
    assert [c.account for c in only(ev, E.OrderCanceled)] == [1]
    ev = h.do(C.CancelAll(account=0, market="ETH-USDT", reason="operator"))
    assert sorted(c.account for c in only(ev, E.OrderCanceled)) == [1, 2]
    ev = h.do(C.CancelAll(account=2))
    assert len(only(ev, E.OrderCanceled)) == 1 and not h.engine.orders
    assert rejected(h.do(C.CancelAll(account=2))) == X.UNKNOWN_ORDER


def test_fee_holiday_applies_but_never_exceeds_hold():
    h = Harness()
    a = only(h.place(1, "buy", 2, PX), E.OrderAccepted)[0].order_id
    h.do(C.UpdateMarket(market="BTC-USDT", maker_fee_ppm=900, taker_fee_ppm=1000, reason="raise"))
    t = only(h.place(2, "sell", 2, PX), E.Trade)[0]
    assert t.maker_order == a and t.maker_fee == fee_amount(t.price * t.qty // 100, 200)  # capped
    h.do(C.UpdateMarket(market="BTC-USDT", maker_fee_ppm=0, taker_fee_ppm=0, reason="fee holiday"))
    h.place(1, "buy", 2, PX)
    t = only(h.place(2, "sell", 2, PX), E.Trade)[0]
    assert t.maker_fee == 0 and t.taker_fee == 0
    assert h.engine.check_invariants() == []


def test_amended_order_never_trades_at_its_old_level():
    h = Harness()
    a = only(h.place(1, "buy", 2, PX), E.OrderAccepted)[0].order_id
    h.place(1, "buy", 2, PX - 10)  # ahead of b: b is not at the front of its level...
    b = only(h.place(1, "buy", 2, PX - 10), E.OrderAccepted)[0].order_id
    h.place(1, "buy", 2, PX - 10)  # ...and the level stays alive after b leaves it
    h.do(C.AmendOrder(account=1, market="BTC-USDT", order_id=b, new_price=PX - 20))
    assert h.engine.check_invariants() == []
    h.do(C.AmendOrder(account=1, market="BTC-USDT", order_id=a, new_qty=3 * LOT))  # same price, up
    trades = only(h.place(2, "sell", 20, PX - 20), E.Trade)
    assert [(t.maker_order, t.price) for t in trades][0] == (a, PX)
    assert [t.price for t in trades if t.maker_order == b] == [PX - 20]
    assert [t.maker_order for t in trades].count(b) == 1
    assert sum(t.qty for t in trades if t.maker_order == a) == 3 * LOT
    assert h.engine.check_invariants() == []
