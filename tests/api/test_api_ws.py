"""WebSocket API against a server subprocess: book snapshot + deltas reproduce the engine's book
exactly, private streams stay private, order entry over the socket."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from bastion.api.security.auth import sign
from serverproc import DEMO_KEY, DEMO_SECRET, Admin, Client, Server, running


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(tmp_path_factory.mktemp("ws") / "data") as s:
        yield s


async def recv(ws: ClientConnection, timeout: float = 3.0) -> dict[str, Any]:
    msg: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return msg


async def reply(ws: ClientConnection, rid: int, sink: list[dict[str, Any]] | None = None,
                timeout: float = 5.0) -> dict[str, Any]:
    """Read until the answer to request ``rid``; channel messages go to ``sink``."""
    end = time.monotonic() + timeout
    while True:
        msg = await recv(ws, max(0.01, end - time.monotonic()))
        if msg.get("id") == rid:
            return msg
        if sink is not None:
            sink.append(msg)


async def auth(ws: ClientConnection, key: str, secret: str, rid: int = 1) -> dict[str, Any]:
    ts = str(time.time_ns() // 1_000_000)
    await ws.send(json.dumps({"op": "auth", "id": rid, "key": key, "timestamp": ts,
                              "signature": sign(secret, f"{ts}GET/v1/ws")}))
    return await reply(ws, rid)


class LocalBook:
    def __init__(self) -> None:
        self.seq = -1
        self.bids: dict[str, str] = {}
        self.asks: dict[str, str] = {}
        self.gaps = 0

    def apply(self, msg: dict[str, Any]) -> None:
        if msg["type"] == "snapshot":
            self.seq = msg["seq"]
            self.bids = dict(msg["bids"])
            self.asks = dict(msg["asks"])
            return
        if msg["prev_seq"] != self.seq:
            self.gaps += 1
        self.seq = msg["seq"]
        for side, levels in ((self.bids, msg["bids"]), (self.asks, msg["asks"])):
            for price, qty in levels:
                if Decimal(qty) == 0:
                    side.pop(price, None)
                else:
                    side[price] = qty

    def as_lists(self) -> tuple[list[list[str]], list[list[str]]]:
        bids = sorted(([p, q] for p, q in self.bids.items()), key=lambda x: -Decimal(x[0]))
        asks = sorted(([p, q] for p, q in self.asks.items()), key=lambda x: Decimal(x[0]))
        return bids, asks


def test_book_snapshot_and_deltas_match_engine(srv: Server) -> None:
    admin = Admin(srv.url)
    alice = Client(srv.url)
    bob = admin.new_account(201)
    rng = random.Random(5)

    async def flow() -> None:
        early = await connect(srv.ws_url)
        await early.send(json.dumps({"op": "subscribe", "id": 1, "channels": ["book.BTC-USDT"]}))
        books = [LocalBook(), LocalBook()]
        feeds: list[list[dict[str, Any]]] = [[], []]
        await reply(early, 1, feeds[0])

        async def trader(n: int) -> None:
            loop = asyncio.get_running_loop()
            live: list[tuple[Client, int]] = []

            async def call(fn: Any, *args: Any, **kw: Any) -> Any:
                return await loop.run_in_executor(None, functools.partial(fn, *args, **kw))

            for _ in range(n):
                who = alice if rng.random() < 0.5 else bob
                r = rng.random()
                if r < 0.15 and live:
                    c, oid = live.pop(rng.randrange(len(live)))
                    await call(c.delete, f"/v1/orders/{oid}")
                elif r < 0.25 and live:
                    c, oid = live[rng.randrange(len(live))]
                    px = str(49_900 + rng.randrange(0, 200))
                    await call(c.patch, f"/v1/orders/{oid}", {"price": px})
                elif r < 0.30:
                    side = rng.choice(["buy", "sell"])
                    await call(who.place, market="BTC-USDT", side=side, type="market",
                               quantity="0.003")
                else:
                    side = rng.choice(["buy", "sell"])
                    px = str(50_000 + rng.randrange(-60, 60))
                    q = str(Decimal(rng.randrange(1, 30)) / 1000)
                    resp = await call(who.place, market="BTC-USDT", side=side, quantity=q,
                                      price=px)
                    if resp.status_code == 201 and resp.json()["status"] in ("open",
                                                                             "partially_filled"):
                        live.append((who, resp.json()["order_id"]))

        late: ClientConnection | None = None

        async def reader(ws: ClientConnection, k: int) -> None:
            while True:
                try:
                    msg = json.loads(await ws.recv())
                except Exception:
                    return
                if msg.get("channel") == "book.BTC-USDT":
                    books[k].apply(msg)

        for m in feeds[0]:
            books[0].apply(m)
        r0 = asyncio.ensure_future(reader(early, 0))
        await trader(120)
        late = await connect(srv.ws_url)  # joins mid-session: snapshot, then deltas
        await late.send(json.dumps({"op": "subscribe", "id": 2, "channels": ["book.BTC-USDT"]}))
        r1 = asyncio.ensure_future(reader(late, 1))
        await trader(120)
        engine_book: dict[str, Any] = {}
        for _ in range(100):
            engine_book = admin.get("/admin/markets/BTC-USDT/book").json()
            want = (engine_book["bids"], engine_book["asks"])
            if all(b.as_lists() == want for b in books):
                break
            await asyncio.sleep(0.05)
        for b in books:
            assert b.gaps == 0
            assert b.as_lists() == (engine_book["bids"], engine_book["asks"])
        assert engine_book["bids"] or engine_book["asks"]
        public = alice.get("/v1/markets/BTC-USDT/book", params={"depth": 5000},
                           signed=False).json()
        assert (public["bids"], public["asks"]) == books[0].as_lists()
        assert public["seq"] == books[0].seq
        for ws, r in ((early, r0), (late, r1)):
            await ws.close()
            r.cancel()

    asyncio.run(flow())
    assert admin.health()["invariants_ok"]


def test_private_streams_are_private(srv: Server) -> None:
    admin = Admin(srv.url)
    carol = admin.new_account(202)
    dave = admin.new_account(203)

    async def flow() -> None:
        async with connect(srv.ws_url) as wc, connect(srv.ws_url) as wd:
            assert (await auth(wc, carol.key or "", carol.secret or ""))["ok"]
            assert (await auth(wd, dave.key or "", dave.secret or ""))["ok"]
            got_c: list[dict[str, Any]] = []
            got_d: list[dict[str, Any]] = []
            await wc.send(json.dumps({"op": "subscribe", "id": 2,
                                      "channels": ["orders", "fills", "balances"]}))
            await reply(wc, 2, got_c)
            await wd.send(json.dumps({"op": "subscribe", "id": 2,
                                      "channels": ["orders", "fills", "balances"]}))
            await reply(wd, 2, got_d)
            mine = carol.place(market="ETH-USDT", side="sell", quantity="0.5",
                               price="3100").json()
            theirs = dave.place(market="ETH-USDT", side="buy", quantity="0.2",
                                price="3100").json()
            assert theirs["status"] == "filled"
            end = time.monotonic() + 3
            while time.monotonic() < end and not any(
                    m.get("channel") == "fills" for m in got_c):
                with contextlib.suppress(TimeoutError):
                    got_c.append(await recv(wc, 0.5))
            for ws, sink in ((wc, got_c), (wd, got_d)):
                while True:
                    try:
                        sink.append(await recv(ws, 0.3))
                    except TimeoutError:
                        break
            orders_c = [m["data"] for m in got_c if m.get("channel") == "orders"]
            fills_c = [m["data"] for m in got_c if m.get("channel") == "fills"]
            orders_d = [m["data"] for m in got_d if m.get("channel") == "orders"]
            assert {o["order_id"] for o in orders_c} == {mine["order_id"]}
            assert {o["order_id"] for o in orders_d} == {theirs["order_id"]}
            assert orders_c[-1]["status"] == "partially_filled"
            assert orders_c[-1]["filled_quantity"] == "0.20000000"
            assert fills_c and fills_c[-1]["liquidity"] == "maker"
            assert all(f["order_id"] == mine["order_id"] for f in fills_c)
            bal_c = [m["data"] for m in got_c if m.get("channel") == "balances"][-1]
            eth = {b["asset"]: b for b in bal_c}["ETH"]
            assert eth["held"] == "0.30000000"

    asyncio.run(flow())


def test_order_entry_over_websocket(srv: Server) -> None:
    async def flow() -> None:
        async with connect(srv.ws_url) as ws:
            await ws.send(json.dumps({"op": "place", "id": 1, "args": {
                "market": "BTC-USDT", "side": "buy", "quantity": "0.01", "price": "20000"}}))
            r = await reply(ws, 1)
            assert not r["ok"] and r["error"]["code"] == "UNAUTHORIZED"
            await ws.send(json.dumps({"op": "subscribe", "id": 2, "channels": ["orders"]}))
            assert (await reply(ws, 2))["error"]["code"] == "UNAUTHORIZED"
            bad = await auth(ws, DEMO_KEY, "not-the-secret", rid=3)
            assert bad["error"]["code"] == "INVALID_SIGNATURE"
            assert (await auth(ws, DEMO_KEY, DEMO_SECRET, rid=4))["ok"]
            args = {"market": "BTC-USDT", "side": "buy", "quantity": "0.01", "price": "20000",
                    "client_order_id": "ws-1"}
            await ws.send(json.dumps({"op": "place", "id": 5, "args": args}))
            placed = (await reply(ws, 5))["result"]
            assert placed["status"] == "open" and placed["client_order_id"] == "ws-1"
            await ws.send(json.dumps({"op": "place", "id": 6, "args": args}))
            dup = (await reply(ws, 6))["result"]
            assert dup["duplicate"] and dup["order_id"] == placed["order_id"]
            await ws.send(json.dumps({"op": "amend", "id": 7, "args": {
                "order_id": placed["order_id"], "price": "20001.5"}}))
            assert (await reply(ws, 7))["result"]["price"] == "20001.50"
            await ws.send(json.dumps({"op": "place", "id": 8, "args": dict(
                args, client_order_id="ws-2", price="20000.001")}))
            err = await reply(ws, 8)
            assert err["error"]["code"] == "INVALID_PRICE" and err["status"] == 400
            # the typed detail, as in a REST error body: 3 decimals where the price has 2
            assert (err["error"]["field"], err["error"]["limit"], err["error"]["value"]) \
                == ("decimals", "2", "3")
            await ws.send(json.dumps({"op": "cancel", "id": 9, "args": {
                "client_order_id": "ws-1"}}))
            assert (await reply(ws, 9))["result"]["status"] == "canceled"
            await ws.send(json.dumps({"op": "cancel", "id": 10, "args": {
                "order_id": placed["order_id"]}}))
            assert (await reply(ws, 10))["error"]["code"] == "UNKNOWN_ORDER"
            # pipelined: many orders in flight, every one answered once
            for i in range(200):
                await ws.send(json.dumps({"op": "place", "id": 100 + i, "args": {
                    "market": "BTC-USDT", "side": "buy", "quantity": "0.001",
                    "price": str(10_000 + i)}}))
            seen = set()
            while len(seen) < 200:
                m = await recv(ws)
                if "id" in m:
                    assert m["ok"], m
                    seen.add(m["id"])
            await ws.send(json.dumps({"op": "cancel_all", "id": 11, "args": {
                "market": "BTC-USDT"}}))
            assert len((await reply(ws, 11))["result"]["canceled"]) >= 200
            await ws.send("{nonsense")
            assert (await recv(ws))["error"]["code"] == "MALFORMED_REQUEST"
            await ws.send(json.dumps({"op": "subscribe", "id": 12, "channels": ["book.NOPE"]}))
            assert (await reply(ws, 12))["error"]["code"] == "UNKNOWN_MARKET"
            await ws.send(json.dumps({"op": "fly", "id": 13}))
            assert (await reply(ws, 13))["error"]["code"] == "MALFORMED_REQUEST"
            await ws.send(json.dumps({"op": "ping", "id": 14}))
            assert (await reply(ws, 14))["ok"]

    asyncio.run(flow())


def test_mode_channel(srv: Server) -> None:
    admin = Admin(srv.url)

    async def flow() -> None:
        async with connect(srv.ws_url) as ws:
            await ws.send(json.dumps({"op": "subscribe", "id": 1, "channels": ["modes"]}))
            seen: list[dict[str, Any]] = []
            await reply(ws, 1, seen)
            snap = [m for m in seen if m.get("type") == "snapshot"][0]
            assert {d["market"] for d in snap["data"]} >= {"BTC-USDT", "ETH-USDT"}
            admin.post("/admin/markets/ETH-USDT/mode", {"mode": "cancel_only",
                                                        "reason": "maintenance"})
            m = await recv(ws)
            assert m["channel"] == "modes" and m["data"]["new"] == "cancel_only"
            assert m["data"]["reason"] == "maintenance" and m["data"]["old"] == "open"
            admin.post("/admin/markets/ETH-USDT/mode", {"mode": "open", "reason": "done"})
            assert (await recv(ws))["data"]["new"] == "open"

    asyncio.run(flow())


def test_oversized_ws_message_closes(tmp_path: Any) -> None:
    with running(tmp_path / "data") as s:
        async def flow() -> None:
            async with connect(s.ws_url, max_size=None) as ws:
                await ws.send("x" * 200_000)
                with pytest.raises(Exception):  # noqa: B017 - closed by the server (1009)
                    await recv(ws)
            async with connect(s.ws_url) as ws:  # the server is fine
                await ws.send(json.dumps({"op": "ping", "id": 1}))
                assert (await reply(ws, 1))["ok"]

        asyncio.run(flow())
