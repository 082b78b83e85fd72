"""Unmodified ccxt ``binanceusdm`` trading the demo perpetual against a server subprocess."""

from __future__ import annotations

from collections.abc import Iterator

import ccxt
import pytest

from ccxt_support import binanceusdm
from serverproc import DEMO_KEY, DEMO_SECRET, Admin, Client, Server, running

SYM = "BTC/USDT:USDT"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(tmp_path_factory.mktemp("usdm") / "data") as s:
        yield s


@pytest.fixture(scope="module")
def ex(srv: Server) -> ccxt.binanceusdm:
    e = binanceusdm(srv.url, DEMO_KEY, DEMO_SECRET)
    e.load_markets()
    return e


@pytest.fixture(scope="module")
def other(srv: Server) -> ccxt.binanceusdm:
    c = Admin(srv.url).new_account(401, {"USDT": "500000"})
    assert c.post("/v1/margin", {"asset": "USDT", "amount": "200000"}).status_code == 200
    e = binanceusdm(srv.url, c.key, c.secret)
    e.load_markets()
    return e


def test_markets_time_funding(ex: ccxt.binanceusdm) -> None:
    assert ex.symbols == [SYM]
    m = ex.market(SYM)
    assert m["swap"] and m["linear"] and m["settle"] == "USDT" and m["active"]
    assert m["precision"]["price"] == 0.1 and m["limits"]["amount"]["min"] == 0.001
    assert abs(ex.fetch_time() - ex.milliseconds()) < 5_000
    fr = ex.fetch_funding_rate(SYM)
    # the demo oracle walks around 50,000 (bastion.feeds.demo)
    assert fr["markPrice"] == pytest.approx(50_000, rel=0.02)
    assert fr["indexPrice"] == pytest.approx(50_000, rel=0.02)
    assert abs(fr["fundingRate"]) <= 0.003 and fr["fundingTimestamp"] > 0


def test_perp_trading_flow(srv: Server, ex: ccxt.binanceusdm, other: ccxt.binanceusdm) -> None:
    bal = ex.fetch_balance()["USDT"]
    assert bal["total"] > 0 and bal["free"] > 0
    buy = ex.create_order(SYM, "limit", "buy", 0.01, 50_000)
    assert buy["status"] == "open" and buy["clientOrderId"]
    sell = other.create_order(SYM, "limit", "sell", 0.004, 49_900)
    assert sell["status"] == "closed" and sell["average"] == 50_000.0
    book = ex.fetch_order_book(SYM)
    assert book["bids"][0] == [50_000.0, 0.006]
    assert ex.fetch_ticker(SYM)["last"] == 50_000.0
    assert ex.fetch_trades(SYM)[-1]["amount"] == 0.004
    assert ex.fetch_ohlcv(SYM)[-1][4] == 50_000.0
    longs = ex.fetch_positions([SYM])
    assert len(longs) == 1 and longs[0]["side"] == "long" and longs[0]["contracts"] == 0.004
    assert longs[0]["entryPrice"] == 50_000.0
    assert longs[0]["markPrice"] == pytest.approx(50_000, rel=0.02)
    shorts = other.fetch_positions()
    assert shorts[0]["side"] == "short" and shorts[0]["contracts"] == 0.004
    # reduce-only: allowed to shrink the short, refused to grow it
    ro = other.create_order(SYM, "limit", "buy", 0.002, 49_000, {"reduceOnly": True})
    assert ro["reduceOnly"] is True and ro["status"] == "open"
    with pytest.raises(ccxt.InvalidOrder):
        other.create_order(SYM, "limit", "sell", 0.002, 51_000, {"reduceOnly": True})
    po = ex.create_order(SYM, "limit", "buy", 0.01, 49_500, {"postOnly": True})
    assert po["postOnly"] and po["timeInForce"] == "PO"
    with pytest.raises(ccxt.OrderImmediatelyFillable):
        other.create_order(SYM, "limit", "sell", 0.01, 49_900, {"postOnly": True})
    ioc = other.create_order(SYM, "limit", "sell", 0.02, 50_000, {"timeInForce": "IOC"})
    assert ioc["status"] == "expired" and ioc["filled"] == 0.006
    with pytest.raises(ccxt.InvalidOrder):
        other.create_order(SYM, "limit", "sell", 0.5, 49_000, {"timeInForce": "FOK"})
    mkt = other.create_order(SYM, "market", "sell", 0.001)
    assert mkt["status"] == "closed" and mkt["filled"] == 0.001
    assert {t["order"] for t in ex.fetch_my_trades(SYM)} == {buy["id"], po["id"]}
    assert {o["id"] for o in ex.fetch_open_orders(SYM)} == {po["id"]}
    assert ex.fetch_order(buy["id"], SYM)["status"] == "closed"
    ex.cancel_order(po["id"], SYM)
    with pytest.raises(ccxt.OrderNotFound):
        ex.cancel_order(po["id"], SYM)
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order("424242", SYM)
    other.cancel_all_orders(SYM)
    assert other.fetch_open_orders(SYM) == []
    assert {o["id"] for o in ex.fetch_orders(SYM)} >= {buy["id"], po["id"]}
    with pytest.raises(ccxt.InsufficientFunds):
        ex.create_order(SYM, "limit", "buy", 500, 50_000)
    native = Client(srv.url).get("/v1/positions").json()
    assert native[0]["market"] == "BTC-USDT-PERP" and native[0]["size"] == "0.01100000"
    assert Admin(srv.url).health()["invariants_ok"]
