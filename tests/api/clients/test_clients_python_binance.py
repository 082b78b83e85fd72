"""Unmodified python-binance (``Client``, ``AsyncClient``, ``BinanceSocketManager``,
``DepthCacheManager``) against a server subprocess on a real socket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

# python-binance and the official connectors all install into the ``binance`` package and
# each ships its own ``binance/__init__.py``; import python-binance's modules directly so the
# suite does not depend on which package pip wrote last
pytest.importorskip("binance.client")
from binance.async_client import AsyncClient  # noqa: E402
from binance.client import Client  # noqa: E402
from binance.exceptions import BinanceAPIException  # noqa: E402
from binance.ws.streams import BinanceSocketManager  # noqa: E402

from clients_support import (  # noqa: E402
    next_event,
    pointed,
    python_binance_urls,
    socket_manager_urls,
)
from serverproc import DEMO_KEY, DEMO_SECRET, Admin, Server, running  # noqa: E402

SYM = "BTCUSDT"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(tmp_path_factory.mktemp("pybinance") / "data") as s:
        yield s


@pytest.fixture(scope="module")
def client(srv: Server) -> Client:
    cls = pointed(Client, python_binance_urls(srv.url))
    c: Client = cls(DEMO_KEY, DEMO_SECRET)  # pings the server in the constructor
    return c


@pytest.fixture(scope="module")
def other(srv: Server) -> Client:
    c = Admin(srv.url).new_account(401)
    assert c.post("/v1/margin", {"asset": "USDT", "amount": "200000"}).status_code == 200
    cls = pointed(Client, python_binance_urls(srv.url))
    o: Client = cls(c.key, c.secret, ping=False)
    return o


def test_public_spot(client: Client) -> None:
    assert abs(client.get_server_time()["serverTime"] - time.time() * 1000) < 60_000
    info = client.get_symbol_info(SYM)
    assert info is not None and info["status"] == "TRADING"
    assert {f["filterType"] for f in info["filters"]} >= {"PRICE_FILTER", "LOT_SIZE"}
    assert client.get_order_book(symbol=SYM)["lastUpdateId"] > 0
    assert isinstance(client.get_all_tickers(), list)
    assert client.get_symbol_ticker(symbol=SYM)["symbol"] == SYM
    assert "price" in client.get_avg_price(symbol=SYM)
    assert client.get_orderbook_ticker(symbol=SYM)["symbol"] == SYM


def test_spot_trading(client: Client, other: Client) -> None:
    free0 = float(client.get_asset_balance(asset="USDT")["free"])
    assert client.create_test_order(symbol=SYM, side="BUY", type="LIMIT", timeInForce="GTC",
                                    quantity="0.01", price="50000") == {}
    with pytest.raises(BinanceAPIException) as bad:
        client.create_test_order(symbol=SYM, side="BUY", type="LIMIT", timeInForce="GTC",
                                 quantity="0.01", price="50000.001")
    assert bad.value.code in (-1013, -1111)
    assert float(client.get_asset_balance(asset="USDT")["free"]) == free0  # nothing placed
    buy = client.order_limit_buy(symbol=SYM, quantity="0.01", price="50000")
    assert buy["status"] == "NEW"
    assert client.get_order(symbol=SYM, orderId=buy["orderId"])["origQty"] == "0.01000000"
    assert [o["orderId"] for o in client.get_open_orders(symbol=SYM)] == [buy["orderId"]]
    sell = other.order_market_sell(symbol=SYM, quantity="0.004")
    assert sell["status"] == "FILLED" and sell["fills"][0]["price"] == "50000.00"
    trades = client.get_my_trades(symbol=SYM)
    assert trades[-1]["orderId"] == buy["orderId"] and trades[-1]["qty"] == "0.00400000"
    # python-binance sends DELETE parameters in a form body
    canceled = client.cancel_order(symbol=SYM, orderId=buy["orderId"])
    assert canceled["status"] == "CANCELED" and canceled["executedQty"] == "0.00400000"
    assert client.get_open_orders(symbol=SYM) == []
    statuses = {o["orderId"]: o["status"] for o in client.get_all_orders(symbol=SYM)}
    assert statuses[buy["orderId"]] == "CANCELED"
    kl = client.get_klines(symbol=SYM, interval=Client.KLINE_INTERVAL_1MINUTE)
    assert sum(float(k[5]) for k in kl) == pytest.approx(0.004)
    assert client.get_aggregate_trades(symbol=SYM)[-1]["q"] == "0.00400000"
    assert client.get_recent_trades(symbol=SYM)[-1]["qty"] == "0.00400000"


def test_futures(client: Client, other: Client) -> None:
    assert any(s["symbol"] == SYM for s in client.futures_exchange_info()["symbols"])
    assert client.futures_mark_price(symbol=SYM)["markPrice"]
    assert client.futures_symbol_ticker(symbol=SYM)["symbol"] == SYM
    assert client.futures_get_position_mode() == {"dualSidePosition": False}
    assert client.futures_change_position_mode(dualSidePosition="false")["code"] == 200
    with pytest.raises(BinanceAPIException):
        client.futures_change_position_mode(dualSidePosition="true")
    assert client.futures_get_multi_assets_mode() == {"multiAssetsMargin": False}
    assert client.futures_change_multi_assets_mode(multiAssetsMargin=False)["code"] == 200
    with pytest.raises(BinanceAPIException) as same:
        client.futures_change_margin_type(symbol=SYM, marginType="CROSSED")
    assert same.value.code == -4046  # Binance's "No need to change margin type."
    lev = client.futures_change_leverage(symbol=SYM, leverage=5)
    assert lev["leverage"] == 5
    again = client.futures_change_leverage(symbol=SYM, leverage=5)  # bots re-send on start
    assert again["leverage"] == 5 and again["symbol"] == SYM
    bal = {b["asset"]: b for b in client.futures_account_balance()}
    assert float(bal["USDT"]["balance"]) > 0
    mark = float(client.futures_mark_price(symbol=SYM)["markPrice"])
    px = f"{round(mark):.2f}"
    order = client.futures_create_order(symbol=SYM, side="BUY", type="LIMIT",
                                        timeInForce="GTC", quantity="0.01", price=px)
    assert order["status"] == "NEW"
    assert client.futures_get_order(symbol=SYM, orderId=order["orderId"])["status"] == "NEW"
    other.futures_create_order(symbol=SYM, side="SELL", type="MARKET", quantity="0.005")
    pos = [p for p in client.futures_position_information(symbol=SYM)
           if float(p["positionAmt"])]
    assert float(pos[0]["positionAmt"]) == pytest.approx(0.005)
    assert client.futures_account_trades(symbol=SYM)[-1]["orderId"] == order["orderId"]
    done = client.futures_cancel_order(symbol=SYM, orderId=order["orderId"])
    assert done["status"] == "CANCELED"
    assert client.futures_get_open_orders(symbol=SYM) == []
    key = client.futures_stream_get_listen_key()
    assert isinstance(key, str) and len(key) >= 32
    client.futures_stream_keepalive(listenKey=key)
    client.futures_stream_close(listenKey=key)


def _async_client(srv: Server, key: str = DEMO_KEY, secret: str = DEMO_SECRET) -> Any:
    return pointed(AsyncClient, python_binance_urls(srv.url)).create(key, secret)


def _manager(srv: Server, client: Any) -> BinanceSocketManager:
    bm: BinanceSocketManager = pointed(BinanceSocketManager, socket_manager_urls(srv.url))(
        client)
    return bm


def quick_exit(sock: Any) -> Any:
    """python-binance's read loop notices an exit only at its next message or after
    ``TIMEOUT`` (10 s) of silence; a quiet test market would wait that long per socket."""
    sock.TIMEOUT = 1
    return sock


def test_socket_manager_market_streams(srv: Server, client: Client, other: Client) -> None:
    async def main() -> None:
        ac = await _async_client(srv)
        try:
            bm = _manager(srv, ac)
            async with quick_exit(bm.trade_socket(SYM)) as trades, \
                    quick_exit(bm.depth_socket(SYM)) as depth, \
                    quick_exit(bm.multiplex_socket([SYM.lower() + "@bookTicker"])) as multi, \
                    quick_exit(bm.kline_socket(SYM)) as kline:
                await asyncio.sleep(0.3)
                await asyncio.to_thread(client.order_limit_sell, symbol=SYM,
                                        quantity="0.002", price="51000")
                await asyncio.to_thread(other.order_market_buy, symbol=SYM, quantity="0.002")
                t = await next_event(trades, lambda m: m.get("e") == "trade")
                assert t["s"] == SYM and t["p"] == "51000.00" and t["q"] == "0.00200000"
                d = await next_event(depth, lambda m: m.get("e") == "depthUpdate")
                assert d["s"] == SYM and d["U"] <= d["u"]
                b = await next_event(multi, lambda m: m.get("stream", "").endswith(
                    "@bookTicker"))
                assert b["data"]["s"] == SYM
                k = await next_event(kline, lambda m: m.get("e") == "kline"
                                     and m["k"]["n"] > 0)
                assert k["k"]["i"] == "1m" and float(k["k"]["v"]) > 0
        finally:
            await ac.close_connection()

    asyncio.run(main())


def test_socket_manager_user_streams(srv: Server, client: Client, other: Client) -> None:
    """Spot user data through the WebSocket API subscription, futures through a listenKey."""
    async def main() -> None:
        ac = await _async_client(srv)
        quick_exit(ac.ws_api)
        try:
            bm = _manager(srv, ac)
            async with quick_exit(bm.user_socket()) as user, \
                    quick_exit(bm.futures_user_socket()) as fuser:
                await asyncio.sleep(0.3)
                sell = await asyncio.to_thread(client.order_limit_sell, symbol=SYM,
                                               quantity="0.003", price="52000")
                rep = await next_event(user, lambda m: m.get("e") == "executionReport")
                assert rep["i"] == sell["orderId"] and rep["x"] == "NEW"
                await asyncio.to_thread(other.order_market_buy, symbol=SYM, quantity="0.003")
                fill = await next_event(user, lambda m: m.get("e") == "executionReport"
                                        and m["x"] == "TRADE" and m["i"] == sell["orderId"])
                assert fill["X"] == "FILLED" and fill["z"] == "0.00300000"
                pos = await next_event(user, lambda m: m.get("e") == "outboundAccountPosition")
                assert {b["a"] for b in pos["B"]} >= {"BTC", "USDT"}
                mark = float(client.futures_mark_price(symbol=SYM)["markPrice"])
                o = await asyncio.to_thread(client.futures_create_order, symbol=SYM,
                                            side="SELL", type="LIMIT", timeInForce="GTC",
                                            quantity="0.002", price=f"{round(mark):.2f}")
                await asyncio.to_thread(other.futures_create_order, symbol=SYM, side="BUY",
                                        type="MARKET", quantity="0.002")
                upd = await next_event(fuser, lambda m: m.get("e") == "ORDER_TRADE_UPDATE"
                                       and m["o"]["x"] == "TRADE"
                                       and m["o"]["i"] == o["orderId"])
                assert upd["o"]["i"] == o["orderId"] and upd["o"]["X"] == "FILLED"
                acct = await next_event(fuser, lambda m: m.get("e") == "ACCOUNT_UPDATE")
                assert acct["a"]["B"][0]["a"] == "USDT"
        finally:
            await ac.close_connection()

    asyncio.run(main())
