"""Refusals are mapped through tables from code + typed detail: the native message speaks the
market's units using the bound carried by the event, and the Binance code follows the detail
field, never words in the message."""

from __future__ import annotations

import pytest

from bastion.api import errors as A
from bastion.api.binance.rest import binance_error
from bastion.api.convert import to_units
from bastion.api.errors import ApiError
from bastion.api.service.rejections import api_error
from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.demo import BTC_USDT
from core_harness import LOT, PX, Harness


def _order(**kw: object) -> C.PlaceOrder:
    args: dict[str, object] = {"account": 1, "market": BTC_USDT, "side": "buy", "price": PX,
                               "qty": LOT} | kw
    return C.PlaceOrder(**args)  # type: ignore[arg-type]


def _refusal(h: Harness, **kw: object) -> E.Rejected:
    events = h.do(_order(**kw))
    assert len(events) == 1 and isinstance(events[0], E.Rejected), events
    return events[0]


def test_native_message_in_units_from_the_events_own_bound() -> None:
    h = Harness()
    ev = _refusal(h, qty=LOT + 1)
    assert (ev.code, ev.field, ev.limit) == (X.LOT_SIZE, "qty", LOT)
    # the market changes after the refusal: the message still states the bound that refused
    h.do(C.UpdateMarket(market=BTC_USDT, lot_size=10 * LOT, min_qty=10 * LOT, reason="t"))
    err = api_error(ev, h.engine, _order())
    assert err.code == X.LOT_SIZE and err.status == 400
    assert err.message == "quantity 0.00001001 is not a multiple of the lot size 0.00001000"
    assert (err.field, err.limit, err.value) == ("qty", LOT, LOT + 1)


def test_native_notional_and_tick_messages() -> None:
    h = Harness()
    h.do(C.UpdateMarket(market=BTC_USDT, tick_size=100, reason="t"))
    tick = api_error(_refusal(h, price=PX + 1), h.engine, _order())
    assert tick.message == "price 50000.01 is not a multiple of the tick size 1.00"
    low = api_error(_refusal(h, price=100), h.engine, _order())
    # 1.00 USDT x 0.00001 BTC
    assert (low.code, low.message) == (
        X.MIN_NOTIONAL, "order value 0.00001000 USDT is below the minimum 0.10000000 USDT")


def test_refusal_without_detail_keeps_the_cores_message() -> None:
    h = Harness()
    ev = _refusal(h, account=999)
    err = api_error(ev, h.engine, _order())
    assert (err.code, err.message, err.field) == (X.UNKNOWN_ACCOUNT, ev.message, "")


def test_binance_code_follows_the_detail_not_the_words() -> None:
    with pytest.raises(ApiError) as exc:
        to_units("1.001", 2, X.INVALID_PRICE, "price")
    assert (exc.value.field, exc.value.limit, exc.value.value) == ("decimals", 2, 3)
    assert binance_error(exc.value)[0] == -1111
    # the same words without the detail are just an invalid price
    assert binance_error(ApiError(X.INVALID_PRICE, "has more than 2 decimal places"))[0] \
        == -1013
    assert binance_error(ApiError(A.UNAUTHORIZED, "missing API key", field="key"))[0] == -2014
    assert binance_error(ApiError(A.UNAUTHORIZED, "missing API key"))[0] != -2014


def test_post_only_mode_refusal_is_typed() -> None:
    h = Harness()
    h.do(C.SetMarketMode(market=BTC_USDT, mode="post_only", reason="t"))
    ev = _refusal(h)
    assert (ev.code, ev.field) == (X.MARKET_MODE, "post_only")
    code, msg, _ = binance_error(api_error(ev, h.engine, _order()))
    assert code == -2010 and "post-only" in msg
    h.do(C.SetMarketMode(market=BTC_USDT, mode="halted", reason="t"))
    ev = _refusal(h)
    assert (ev.code, ev.field) == (X.MARKET_MODE, "")
    assert binance_error(api_error(ev, h.engine, _order()))[1].startswith("Market is closed.")


def test_detail_in_decimal_units_of_the_asset_at_fault() -> None:
    h = Harness()
    h.do(C.Deposit(account=7, asset="USDT", amount=100, reason="t"))  # no BTC at all
    sell = _order(account=7, side="sell")
    ev = h.do(sell)[0]
    assert isinstance(ev, E.Rejected) and (ev.code, ev.field) == (X.INSUFFICIENT_FUNDS,
                                                                  "available")
    err = api_error(ev, h.engine, sell)  # a sell spends the base asset
    assert err.value_text.endswith(" BTC") and err.limit_text.endswith(" BTC")
    assert err.detail() == {"field": "available", "limit": err.limit_text,
                            "value": err.value_text}
    buy = api_error(ev, h.engine, _order(side="buy"))
    assert buy.value_text.endswith(" USDT")
    lot = api_error(_refusal(h, qty=LOT + 1), h.engine, _order())
    assert lot.detail() == {"field": "qty", "limit": "0.00001000", "value": "0.00001001"}
    # no unit known (no market, no asset): the field alone, never a raw core integer
    bare = api_error(ev, h.engine, C.CancelAll(account=1))
    assert bare.detail() == {"field": "available"}
