"""The official connectors, unmodified: binance-connector's ``Spot`` and
``SpotWebsocketStreamClient``, binance-futures-connector's ``UMFutures`` and
``UMFuturesWebsocketClient``, against a server subprocess (only ``base_url`` /
``stream_url`` point here)."""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("binance.spot")
from binance.error import ClientError  # noqa: E402
from binance.spot import Spot  # noqa: E402
from binance.um_futures import UMFutures  # noqa: E402
from binance.websocket.spot.websocket_stream import SpotWebsocketStreamClient  # noqa: E402
from binance.websocket.um_futures.websocket_client import UMFuturesWebsocketClient  # noqa: E402

from clients_support import ws_base  # noqa: E402
from serverproc import DEMO_KEY, DEMO_SECRET, Admin, Server, running  # noqa: E402

SYM = "BTCUSDT"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(tmp_path_factory.mktemp("connectors") / "data") as s:
        yield s


@pytest.fixture(scope="module")
def spot(srv: Server) -> Spot:
    return Spot(DEMO_KEY, DEMO_SECRET, base_url=srv.url)


@pytest.fixture(scope="module")
def um(srv: Server) -> UMFutures:
    return UMFutures(DEMO_KEY, DEMO_SECRET, base_url=srv.url)


@pytest.fixture(scope="module")
def counterparty(srv: Server) -> tuple[Spot, UMFutures]:
    c = Admin(srv.url).new_account(501)
    assert c.post("/v1/margin", {"asset": "USDT", "amount": "200000"}).status_code == 200
    assert c.key and c.secret
    return (Spot(c.key, c.secret, base_url=srv.url),
            UMFutures(c.key, c.secret, base_url=srv.url))


class Inbox:
    """Messages a connector's WebSocket thread hands to ``on_message``; ``until`` finds the
    first one (already received or still to come) matching a predicate."""

    def __init__(self) -> None:
        self.q: queue.Queue[Any] = queue.Queue()
        self.seen: list[Any] = []

    def __call__(self, _ws: Any, message: str) -> None:
        self.q.put(json.loads(message))

    def until(self, pred: Callable[[Any], bool], timeout: float = 10.0) -> Any:
        for msg in self.seen:
            if pred(msg):
                return msg
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching message")
            msg = self.q.get(timeout=left)
            self.seen.append(msg)
            if pred(msg):
                return msg


def _next_ms() -> None:
    """Binance signs only the parameters: a request repeating the last one's parameters in the
    same millisecond carries its signature, which the replay cache refuses (a write may reuse a
    read's only on the read's connection, and this connector's pool does not promise one)."""
    time.sleep(0.002)


def test_spot_rest(spot: Spot, counterparty: tuple[Spot, UMFutures]) -> None:
    other, _ = counterparty
    assert abs(spot.time()["serverTime"] - time.time() * 1000) < 60_000
    assert spot.exchange_info(symbol=SYM)["symbols"][0]["symbol"] == SYM
    assert spot.ticker_price(SYM)["symbol"] == SYM
    assert {t["symbol"] for t in spot.ticker_price(symbols=[SYM, "ETHUSDT"])} == \
        {SYM, "ETHUSDT"}
    assert "price" in spot.avg_price(SYM)
    assert spot.book_ticker(SYM)["symbol"] == SYM
    assert spot.new_order_test(SYM, "BUY", "LIMIT", timeInForce="GTC", quantity="0.01",
                               price="50000") == {}
    _next_ms()  # the test order's parameters again
    o = spot.new_order(SYM, "BUY", "LIMIT", timeInForce="GTC", quantity="0.01", price="50000")
    assert spot.get_order(SYM, orderId=o["orderId"])["status"] == "NEW"
    assert [x["orderId"] for x in spot.get_open_orders(SYM)] == [o["orderId"]]
    other.new_order(SYM, "SELL", "MARKET", quantity="0.002")
    assert spot.my_trades(SYM)[-1]["qty"] == "0.00200000"
    _next_ms()
    assert spot.cancel_order(SYM, orderId=o["orderId"])["status"] == "CANCELED"
    _next_ms()  # the same cancel in the same ms signs alike: a replay (-1022), not -2011
    with pytest.raises(ClientError) as err:
        spot.cancel_order(SYM, orderId=o["orderId"])
    assert err.value.error_code == -2011
    assert any(b["asset"] == "BTC" for b in spot.account()["balances"])
    assert spot.klines(SYM, "1m")[-1][0] % 60_000 == 0
    lk = spot.new_listen_key()["listenKey"]
    assert spot.renew_listen_key(lk) == {}
    assert spot.close_listen_key(lk) == {}
    with pytest.raises(ClientError) as gone:
        spot.renew_listen_key(lk)
    assert gone.value.error_code == -1125


def test_um_futures_rest(um: UMFutures, counterparty: tuple[Spot, UMFutures]) -> None:
    _, other = counterparty
    assert um.ticker_price(SYM)["symbol"] == SYM
    assert float(um.mark_price(SYM)["markPrice"]) > 0
    assert um.get_position_mode() == {"dualSidePosition": False}
    assert um.change_position_mode(dualSidePosition="false")["code"] == 200
    assert um.get_multi_asset_mode() == {"multiAssetsMargin": False}
    first = um.change_leverage(SYM, 7)
    assert um.change_leverage(SYM, 7) == first
    assert float({b["asset"]: b for b in um.balance()}["USDT"]["balance"]) > 0
    mark = round(float(um.mark_price(SYM)["markPrice"]))
    assert um.new_order_test(symbol=SYM, side="BUY", type="LIMIT", timeInForce="GTC",
                             quantity="0.01", price=f"{mark}") == {}
    _next_ms()  # the test order's parameters again
    o = um.new_order(symbol=SYM, side="BUY", type="LIMIT", timeInForce="GTC",
                     quantity="0.01", price=f"{mark}")
    other.new_order(symbol=SYM, side="SELL", type="MARKET", quantity="0.004")
    assert um.query_order(SYM, orderId=o["orderId"])["status"] == "PARTIALLY_FILLED"
    _next_ms()
    assert um.cancel_order(SYM, orderId=o["orderId"])["status"] == "CANCELED"
    pos = [p for p in um.get_position_risk(symbol=SYM) if float(p["positionAmt"])]
    assert float(pos[0]["positionAmt"]) == pytest.approx(0.004)
    lk = um.new_listen_key()["listenKey"]
    assert um.renew_listen_key(lk)["listenKey"] == lk
    um.close_listen_key(lk)


def test_spot_websocket_client(srv: Server, spot: Spot,
                               counterparty: tuple[Spot, UMFutures]) -> None:
    other, _ = counterparty
    inbox = Inbox()
    ws = SpotWebsocketStreamClient(stream_url=ws_base(srv.url), on_message=inbox)
    try:
        ws.agg_trade(SYM, id=1)
        ws.diff_book_depth(SYM, speed=100, id=2)
        ws.book_ticker(SYM, id=3)
        ws.user_data(spot.new_listen_key()["listenKey"], id=4)
        for i in (1, 2, 3, 4):
            assert inbox.until(lambda m, i=i: m.get("id") == i) == {"result": None, "id": i}
        ws.list_subscribe(id=5)
        listed = inbox.until(lambda m: m.get("id") == 5)["result"]
        assert {"btcusdt@aggTrade", "btcusdt@depth@100ms", "btcusdt@bookTicker"} <= set(listed)
        sell = spot.new_order(SYM, "SELL", "LIMIT", timeInForce="GTC", quantity="0.003",
                              price="53000")
        other.new_order(SYM, "BUY", "MARKET", quantity="0.003")
        agg = inbox.until(lambda m: m.get("e") == "aggTrade")
        assert agg["p"] == "53000.00" and agg["q"] == "0.00300000"
        assert inbox.until(lambda m: m.get("e") == "depthUpdate")["s"] == SYM
        assert "b" in inbox.until(lambda m: "u" in m and "e" not in m)
        rep = inbox.until(lambda m: m.get("e") == "executionReport" and m["x"] == "TRADE")
        assert rep["i"] == sell["orderId"] and rep["X"] == "FILLED"
        ws.agg_trade(SYM, id=6, action=SpotWebsocketStreamClient.ACTION_UNSUBSCRIBE)
        assert inbox.until(lambda m: m.get("id") == 6)["result"] is None
    finally:
        ws.stop()


def test_um_futures_websocket_client(srv: Server, um: UMFutures,
                                     counterparty: tuple[Spot, UMFutures]) -> None:
    _, other = counterparty
    inbox = Inbox()
    ws = UMFuturesWebsocketClient(stream_url=ws_base(srv.url) + "/fstream", on_message=inbox)
    try:
        ws.mark_price(SYM, 1, id=1)
        ws.diff_book_depth(SYM, speed=100, id=2)
        ws.user_data(um.new_listen_key()["listenKey"], id=3)
        for i in (1, 2, 3):
            assert inbox.until(lambda m, i=i: m.get("id") == i)["result"] is None
        mp = inbox.until(lambda m: m.get("e") == "markPriceUpdate")
        assert mp["s"] == SYM and float(mp["p"]) > 0
        # the stream's mark can be a second old and the demo oracle keeps moving: price the
        # order from the mark now, so it stays inside the price band
        mark = round(float(um.mark_price(SYM)["markPrice"]))
        o = um.new_order(symbol=SYM, side="SELL", type="LIMIT", timeInForce="GTC",
                         quantity="0.002", price=f"{mark}")
        other.new_order(symbol=SYM, side="BUY", type="MARKET", quantity="0.002")
        d = inbox.until(lambda m: m.get("e") == "depthUpdate")
        assert d["pu"] <= d["u"]
        upd = inbox.until(lambda m: m.get("e") == "ORDER_TRADE_UPDATE"
                          and m["o"]["x"] == "TRADE")
        assert upd["o"]["i"] == o["orderId"]
        acct = inbox.until(lambda m: m.get("e") == "ACCOUNT_UPDATE")
        assert any(p["s"] == SYM for p in acct["a"]["P"])
    finally:
        ws.stop()
