"""Unmodified ccxt pro (``ccxt.pro.binance`` / ``binanceusdm``) on Bastion's Binance
WebSocket streams: its local order book, built from a REST snapshot plus ``@depth`` updates,
must equal ``/api/v3/depth`` after a burst of trading; trades and the user's orders arrive."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import ccxt.pro as ccxtpro
import httpx
import pytest

from ccxt_support import point
from clients_support import ws_base
from serverproc import DEMO_KEY, DEMO_SECRET, Admin, Client, Server, running

SPOT, PERP, ETH = "BTC/USDT", "BTC/USDT:USDT", "ETH/USDT"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(tmp_path_factory.mktemp("ccxtpro") / "data") as s:
        yield s


@pytest.fixture(scope="module")
def traders(srv: Server) -> list[Client]:
    admin = Admin(srv.url)
    out = []
    for acct in (601, 602):
        c = admin.new_account(acct, {"USDT": "10000000", "BTC": "1000", "ETH": "1000"})
        assert c.post("/v1/margin", {"asset": "USDT", "amount": "2000000"}).status_code == 200
        out.append(c)
    return out


def pro(cls: Any, base: str) -> Any:
    """A ccxt pro exchange with its REST and WebSocket URLs pointed at ``base``."""
    ex = point(cls({"apiKey": DEMO_KEY, "secret": DEMO_SECRET}), base)
    ws = ws_base(base)
    ex.urls["api"]["ws"] = {"spot": ws + "/stream/ws", "margin": ws + "/stream/ws",
                            "linear": ws + "/fstream/ws", "inverse": ws + "/dstream/ws",
                            "ws-api": {"spot": ws + "/ws-api/v3"}}
    return ex


def burst(c1: Client, c2: Client, market: str, n: int, mid: int, seed: int) -> None:
    """Resting orders on both sides, cancels, and crossing orders that trade."""
    rnd = random.Random(seed)
    placed: list[int] = []
    for _ in range(n):
        who = rnd.choice((c1, c2))
        side = rnd.choice(("buy", "sell"))
        off = rnd.randint(-20, 20) * 10
        price = mid + off if side == "sell" else mid - off
        r = who.place(market=market, side=side, quantity=f"0.00{rnd.randint(1, 9)}",
                      price=f"{price}")
        if r.status_code in (200, 201) and r.json()["status"] == "open":
            placed.append(r.json()["order_id"])
            if rnd.random() < 0.3:
                oid = placed.pop(rnd.randrange(len(placed)))
                for c in (c1, c2):
                    c.delete(f"/v1/orders/{oid}")


async def book_matches(ex: Any, base: str, symbol: str, path: str, rest_symbol: str) -> None:
    """Wait until ccxt's local book reaches the REST snapshot's lastUpdateId, then compare
    them level by level (the burst is over, so the snapshot no longer moves)."""
    async with httpx.AsyncClient(base_url=base) as http:
        snap = (await http.get(path, params={"symbol": rest_symbol, "limit": 1000})).json()
        book: Any = None
        for _ in range(200):
            book = ex.orderbooks.get(symbol)
            if book is not None and book["nonce"] == snap["lastUpdateId"]:
                break
            await asyncio.sleep(0.05)
        assert book is not None and book["nonce"] == snap["lastUpdateId"], \
            (book and book["nonce"], snap["lastUpdateId"])
        assert book["bids"] == [[float(p), float(q)] for p, q in snap["bids"]]
        assert book["asks"] == [[float(p), float(q)] for p, q in snap["asks"]]
        assert snap["bids"] and snap["asks"]


def test_watch_order_book_spot_and_perp(srv: Server, traders: list[Client]) -> None:
    async def main() -> None:
        spot = pro(ccxtpro.binance, srv.url)
        perp = pro(ccxtpro.binanceusdm, srv.url)
        try:
            await spot.load_markets()
            await perp.load_markets()
            watching = [asyncio.ensure_future(spot.watch_order_book(SPOT)),
                        asyncio.ensure_future(perp.watch_order_book(PERP))]
            await asyncio.sleep(0.5)
            mark = float((await perp.fetch_funding_rate(PERP))["markPrice"])
            await asyncio.to_thread(burst, *traders, "BTC-USDT", 150, 50_000, 1)
            await asyncio.to_thread(burst, *traders, "BTC-USDT-PERP", 60, round(mark), 2)
            first = await asyncio.wait_for(watching[0], 10)
            assert first["symbol"] == SPOT
            await asyncio.wait_for(watching[1], 10)
            await book_matches(spot, srv.url, SPOT, "/api/v3/depth", "BTCUSDT")
            await book_matches(perp, srv.url, PERP, "/fapi/v1/depth", "BTCUSDT")
        finally:
            await spot.close()
            await perp.close()

    asyncio.run(main())


async def cached_order(ex: Any, oid: str, status: str) -> Any:
    """The order as ccxt's stream cache holds it, once it reached ``status``: updates that
    arrive between two ``watch_orders`` calls land in the cache, not in a waiting call."""
    for _ in range(100):
        for o in ex.orders or []:
            if o["id"] == oid and o["status"] == status:
                return o
        await asyncio.sleep(0.05)
    raise AssertionError(f"order {oid} never reached {status} in the stream cache")


def test_watch_trades_and_orders(srv: Server, traders: list[Client]) -> None:
    async def main() -> None:
        spot = pro(ccxtpro.binance, srv.url)
        perp = pro(ccxtpro.binanceusdm, srv.url)
        try:
            await spot.load_markets()
            await perp.load_markets()
            taker = Admin(srv.url).new_account(603)
            trades = asyncio.ensure_future(spot.watch_trades(ETH))
            orders = asyncio.ensure_future(spot.watch_orders(ETH))
            mytrades = asyncio.ensure_future(spot.watch_my_trades(ETH))
            balance = asyncio.ensure_future(spot.watch_balance())
            ticker = asyncio.ensure_future(spot.watch_ticker(ETH))
            porders = asyncio.ensure_future(perp.watch_orders(PERP))
            await asyncio.sleep(0.5)
            mine = await spot.create_order(ETH, "limit", "sell", 0.2, 3_000)
            await asyncio.to_thread(taker.place, market="ETH-USDT", side="buy",
                                    quantity="0.2", price="3000")
            got = await asyncio.wait_for(trades, 10)
            assert got[-1]["price"] == 3_000.0 and got[-1]["amount"] == 0.2
            seen = await asyncio.wait_for(orders, 10)
            assert seen[-1]["id"] == mine["id"]
            assert (await cached_order(spot, mine["id"], "closed"))["filled"] == 0.2
            fill = (await asyncio.wait_for(mytrades, 10))[-1]
            assert fill["order"] == mine["id"] and fill["amount"] == 0.2
            assert (await asyncio.wait_for(balance, 10))["ETH"]["total"] is not None
            tick = await asyncio.wait_for(ticker, 10)
            for _ in range(5):
                if tick["last"] == 3_000.0:
                    break
                tick = await asyncio.wait_for(spot.watch_ticker(ETH), 10)
            assert tick["last"] == 3_000.0
            mark = float((await perp.fetch_funding_rate(PERP))["markPrice"])
            p = await perp.create_order(PERP, "limit", "buy", 0.003, round(mark * 0.99))
            pseen = await asyncio.wait_for(porders, 10)
            assert pseen[-1]["id"] == p["id"] and pseen[-1]["status"] == "open"
            await perp.cancel_order(p["id"], PERP)
            assert (await cached_order(perp, p["id"], "canceled"))["filled"] == 0
        finally:
            await spot.close()
            await perp.close()

    asyncio.run(main())
