"""The book snapshot a ``subscribe`` sends is rendered once per book change and shared by every
subscriber until the book moves (a re-subscribe flood once re-rendered 200 levels per frame)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import msgspec

from bastion.api.ws.endpoint import Conn, Hub
from bastion.api.ws.marketdata import BookFeed
from bastion.core import commands as C
from bastion.core.engine import Engine
from bastion.demo import BTC_USDT, demo_setup


def _engine() -> Engine:
    engine = Engine()
    for cmd in demo_setup([1, 2]):
        apply(engine, cmd)
    for i in range(200):  # a 200-level book, as bench/ws_flood.py seeds
        apply(engine, C.PlaceOrder(account=1, market=BTC_USDT, side="buy",
                                   qty=10_000, price=5_000_000 - i))
    return engine


def apply(engine: Engine, cmd: C.Command) -> None:
    engine.apply(msgspec.structs.replace(cmd, seq=engine.seq + 1, ts=engine.ts + 1))


def _hub(engine: Engine) -> Hub:
    books = BookFeed()
    books.load(engine)
    gateway = SimpleNamespace(engine=engine, books=books, market=lambda n: engine.markets[n])
    ctx: Any = SimpleNamespace(gateway=gateway, keys=SimpleNamespace(watch=lambda _f: None),
                               settings=SimpleNamespace(ws_max_channels=100))
    return Hub(ctx)


def _conn() -> Conn:
    ws: Any = SimpleNamespace(scope={}, client=None)
    return Conn(ws, 1 << 30)


def _snapshot(conn: Conn) -> dict[str, Any]:
    msg: dict[str, Any] = json.loads(conn.queue.get_nowait())
    assert msg["type"] == "snapshot"
    return msg


def test_subscribers_share_one_render_until_the_book_moves() -> None:
    async def run() -> None:
        engine = _engine()
        hub = _hub(engine)
        conns = [_conn() for _ in range(50)]
        for _ in range(3):  # re-subscribing, as the flood does
            for conn in conns:
                hub.subscribe(conn, "book." + BTC_USDT)
        assert hub.snapshot_renders == 1
        first = [_snapshot(c) for c in conns]
        assert all(m == first[0] for m in first)
        assert len(first[0]["bids"]) == 200 and first[0]["bids"][0] == ["50000.00", "0.00010000"]

        apply(engine, C.PlaceOrder(account=2, market=BTC_USDT, side="sell", qty=20_000,
                                   price=6_000_000))
        hub.ctx.gateway.books.update(engine, [(BTC_USDT, False, 6_000_000)])
        hub.subscribe(conns[0], "book." + BTC_USDT)
        hub.subscribe(conns[1], "book." + BTC_USDT)
        assert hub.snapshot_renders == 2
        for conn in conns[:2]:
            for _ in range(2):
                _snapshot(conn)  # the two older copies
            fresh = _snapshot(conn)
            assert fresh["seq"] == engine.seq > first[0]["seq"]
            assert fresh["asks"] == [["60000.00", "0.00020000"]]

    asyncio.run(run())
