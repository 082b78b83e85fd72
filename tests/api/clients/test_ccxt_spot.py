"""Unmodified ccxt ``binance`` (spot) trading against a server subprocess on a real socket."""

from __future__ import annotations

from collections.abc import Iterator

import ccxt
import pytest

from ccxt_support import binance
from serverproc import DEMO_KEY, DEMO_SECRET, Admin, Server, running

SYM = "BTC/USDT"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(tmp_path_factory.mktemp("ccxt") / "data") as s:
        yield s


@pytest.fixture(scope="module")
def ex(srv: Server) -> ccxt.binance:
    e = binance(srv.url, DEMO_KEY, DEMO_SECRET)
    e.load_markets()
    return e


@pytest.fixture(scope="module")
def other(srv: Server) -> ccxt.binance:
    c = Admin(srv.url).new_account(301)
    e = binance(srv.url, c.key, c.secret)
    e.load_markets()
    return e


def test_public(ex: ccxt.binance) -> None:
    assert {"BTC/USDT", "ETH/USDT"} <= set(ex.symbols)
    m = ex.market(SYM)
    assert m["spot"] and m["active"] and m["precision"]["price"] == 0.01
    assert m["limits"]["amount"]["min"] == 0.00001
    assert abs(ex.fetch_time() - ex.milliseconds()) < 5_000
    assert ex.fetch_order_book(SYM)["bids"] == []


def test_trading_flow(ex: ccxt.binance, other: ccxt.binance) -> None:
    bal0 = ex.fetch_balance()
    assert bal0["USDT"]["free"] > 0 and bal0["BTC"]["total"] > 0
    buy = ex.create_order(SYM, "limit", "buy", 0.01, 50_000)
    assert buy["status"] == "open" and buy["clientOrderId"]
    assert ex.fetch_balance()["USDT"]["used"] > bal0["USDT"]["used"]
    ask = ex.create_order(SYM, "limit", "sell", 0.01, 51_000)
    book = ex.fetch_order_book(SYM)
    assert book["bids"][0] == [50_000.0, 0.01] and book["asks"][0] == [51_000.0, 0.01]
    taker = other.create_order(SYM, "limit", "sell", 0.004, 49_000)
    assert taker["status"] == "closed" and taker["filled"] == 0.004
    assert taker["average"] == 50_000.0 and taker["trades"]
    mkt = other.create_order(SYM, "market", "buy", 0.002)
    assert mkt["status"] == "closed" and mkt["filled"] == 0.002
    t = ex.fetch_ticker(SYM)
    assert t["last"] == 51_000.0 and t["bid"] == 50_000.0 and t["ask"] == 51_000.0
    assert t["baseVolume"] == pytest.approx(0.006)
    trades = ex.fetch_trades(SYM)
    assert [x["price"] for x in trades][-2:] == [50_000.0, 51_000.0]
    ohlcv = ex.fetch_ohlcv(SYM, "1m")
    # every minute has a candle (an empty one carries the previous close), so a minute
    # boundary during the test adds a volume-0 candle after the traded one
    assert max(c[2] for c in ohlcv) == 51_000.0
    assert sum(c[5] for c in ohlcv) == pytest.approx(0.006)
    assert sum(c[5] for c in ex.fetch_ohlcv(SYM, "1h")) == pytest.approx(0.006)
    o = ex.fetch_order(buy["id"], SYM)
    assert o["status"] == "open" and o["filled"] == 0.004 and o["remaining"] == 0.006
    mine = ex.fetch_my_trades(SYM)
    assert {x["order"] for x in mine} == {buy["id"], ask["id"]}
    assert {x["takerOrMaker"] for x in mine} == {"maker"}
    opens = ex.fetch_open_orders(SYM)
    assert {x["id"] for x in opens} == {buy["id"], ask["id"]}
    c = ex.cancel_order(buy["id"], SYM)
    assert c["status"] == "canceled"
    with pytest.raises(ccxt.OrderNotFound):
        ex.cancel_order(buy["id"], SYM)
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order("987654", SYM)
    canceled = ex.cancel_all_orders(SYM)
    assert [x["id"] for x in canceled] == [ask["id"]]
    assert ex.fetch_open_orders(SYM) == []
    hist = ex.fetch_orders(SYM)
    assert {x["id"]: x["status"] for x in hist} == {buy["id"]: "canceled",
                                                    ask["id"]: "canceled"}


def test_time_in_force_and_post_only(ex: ccxt.binance, other: ccxt.binance) -> None:
    other.create_order(SYM, "limit", "sell", 0.01, 60_000)
    po = ex.create_order(SYM, "limit", "buy", 0.01, 45_000, {"postOnly": True})
    assert po["postOnly"] and po["status"] == "open"
    with pytest.raises(ccxt.OrderImmediatelyFillable):
        ex.create_order(SYM, "limit", "buy", 0.01, 61_000, {"postOnly": True})
    ioc = ex.create_order(SYM, "limit", "buy", 0.02, 60_000, {"timeInForce": "IOC"})
    assert ioc["status"] == "expired" and ioc["filled"] == 0.01
    with pytest.raises(ccxt.InvalidOrder):
        ex.create_order(SYM, "limit", "buy", 0.01, 40_000, {"timeInForce": "FOK"})
    other.create_order(SYM, "limit", "sell", 0.01, 60_000)
    fok = ex.create_order(SYM, "limit", "buy", 0.01, 60_000, {"timeInForce": "FOK"})
    assert fok["status"] == "closed"
    ex.cancel_all_orders(SYM)
    other.cancel_all_orders(SYM)


def test_errors_map_to_ccxt_classes(srv: Server, ex: ccxt.binance) -> None:
    with pytest.raises(ccxt.InsufficientFunds):
        ex.create_order(SYM, "limit", "buy", 900, 50_000)
    with pytest.raises(ccxt.InvalidOrder):  # LOT_SIZE, below ccxt's own precision check
        ex.private_post_order({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                               "timeInForce": "GTC", "quantity": "0.000015",
                               "price": "50000"})
    with pytest.raises(ccxt.BadRequest):  # more decimals than the price has: -1111
        ex.private_post_order({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                               "timeInForce": "GTC", "quantity": "0.01", "price": "50000.015"})
    r = Admin(srv.url).http.patch("/admin/markets/ETH-USDT", json={"tick_size": "0.05"})
    assert r.status_code == 200
    with pytest.raises(ccxt.InvalidOrder):  # PRICE_FILTER (tick size)
        ex.private_post_order({"symbol": "ETHUSDT", "side": "BUY", "type": "LIMIT",
                               "timeInForce": "GTC", "quantity": "0.1", "price": "3000.01"})
    with pytest.raises(ccxt.InvalidOrder):  # NOTIONAL
        ex.private_post_order({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                               "timeInForce": "GTC", "quantity": "0.00001", "price": "1"})
    with pytest.raises(ccxt.BadSymbol):
        ex.public_get_depth({"symbol": "NOPENOPE"})
    bad = binance(srv.url, DEMO_KEY, "definitely-wrong")
    bad.markets, bad.markets_by_id, bad.symbols = ex.markets, ex.markets_by_id, ex.symbols
    bad.currencies = ex.currencies
    with pytest.raises(ccxt.AuthenticationError):
        bad.fetch_balance()
    nokey = binance(srv.url, "no-such-key-xyz", "whatever-secret")
    nokey.markets, nokey.markets_by_id, nokey.symbols = ex.markets, ex.markets_by_id, ex.symbols
    with pytest.raises(ccxt.AuthenticationError):
        nokey.fetch_open_orders(SYM)


def test_accounts_isolated_through_ccxt(ex: ccxt.binance, other: ccxt.binance) -> None:
    o = ex.create_order(SYM, "limit", "buy", 0.01, 30_000)
    with pytest.raises(ccxt.OrderNotFound):
        other.fetch_order(o["id"], SYM)
    with pytest.raises(ccxt.OrderNotFound):
        other.cancel_order(o["id"], SYM)
    assert o["id"] not in {x["id"] for x in other.fetch_orders(SYM)}
    assert ex.fetch_order(o["id"], SYM)["status"] == "open"
    ex.cancel_order(o["id"], SYM)
