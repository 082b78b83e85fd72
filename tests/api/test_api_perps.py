"""Native API on the demo perpetual: funding/mark, margin transfers, leverage, positions,
reduce-only, and the private positions stream."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from bastion.api.security.auth import sign
from serverproc import Admin, Client, running

PERP = "BTC-USDT-PERP"


def test_perpetual_native_flow(tmp_path: Path) -> None:
    with running(tmp_path / "data") as srv:
        alice = Client(srv.url)
        admin = Admin(srv.url)
        bob = admin.new_account(501, {"USDT": "300000"})
        f = alice.get(f"/v1/markets/{PERP}/funding", signed=False).json()
        assert f["armed"] and float(f["mark_price"]) > 0 and f["interval_ms"] == 8 * 3_600_000
        assert alice.get("/v1/markets", signed=False).json()[1]["kind"] == "perp"
        # bob has no margin yet: perp orders are refused with a stable code
        r = bob.place(market=PERP, side="sell", quantity="0.01", price="50000")
        assert r.status_code == 400 and r.json()["code"] in ("INSUFFICIENT_MARGIN",
                                                            "INSUFFICIENT_FUNDS")
        r = bob.post("/v1/margin", {"asset": "USDT", "amount": "100000"})
        # the answer is the one account the transfer changed, not a list of all of them
        assert r.status_code == 200 and r.json()["asset"] == "USDT"
        assert r.json()["collateral"] == "100000.00000000"
        r = bob.post("/v1/margin", {"asset": "USDT", "amount": "0.000000001"})
        assert r.json()["code"] == "INVALID_AMOUNT"
        r = bob.post("/v1/leverage", {"market": PERP, "leverage": 5})
        assert r.status_code == 200, r.text
        lev = r.json()
        assert (lev["market"], lev["leverage"], lev["position"]) == (PERP, 5, None)
        assert lev["margin"]["leverage"] == {PERP: 5}
        assert lev["margin"]["collateral"] == "100000.00000000"
        assert bob.post("/v1/leverage", {"market": PERP, "leverage": 500}).json()["code"] \
            == "INVALID_LEVERAGE"

        async def stream() -> list[dict[str, Any]]:
            got: list[dict[str, Any]] = []
            async with connect(srv.ws_url) as ws:
                ts = str(time.time_ns() // 1_000_000)
                await ws.send(json.dumps({"op": "auth", "id": 1, "key": bob.key,
                                          "timestamp": ts, "signature": sign(
                                              bob.secret or "", f"{ts}GET/v1/ws")}))
                await ws.send(json.dumps({"op": "subscribe", "id": 2,
                                          "channels": ["positions"]}))
                loop = asyncio.get_running_loop()
                buy = await loop.run_in_executor(None, lambda: alice.place(
                    market=PERP, side="buy", quantity="0.02", price="50000"))
                assert buy.status_code == 201, buy.text
                sell = await loop.run_in_executor(None, lambda: bob.place(
                    market=PERP, side="sell", quantity="0.015", price="49990"))
                assert sell.json()["status"] == "filled", sell.text
                end = time.monotonic() + 3
                while time.monotonic() < end:
                    try:
                        m = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                    except TimeoutError:
                        continue
                    got.append(m)
                    if m.get("channel") == "positions" and m["data"]["positions"]:
                        break
            return got

        msgs = asyncio.run(stream())
        pos_msgs = [m["data"] for m in msgs if m.get("channel") == "positions"]
        assert pos_msgs[0]["positions"] == []  # snapshot on subscribe
        live = pos_msgs[-1]["positions"][0]
        assert live["market"] == PERP and live["side"] == "short"
        assert live["size"] == "-0.01500000" and live["leverage"] == 5
        pos = bob.get("/v1/positions").json()
        assert pos[0]["entry_price"] == "50000.00" and pos[0]["settle_asset"] == "USDT"
        mine = alice.get("/v1/positions").json()
        assert mine[0]["side"] == "long" and mine[0]["size"] == "0.01500000"
        # reduce-only: may shrink the short, never grow it
        r = bob.place(market=PERP, side="sell", quantity="0.01", price="51000",
                      reduce_only=True)
        assert r.status_code == 400 and r.json()["code"] == "REDUCE_ONLY"
        r = bob.place(market=PERP, side="buy", quantity="0.005", price="49000",
                      reduce_only=True)
        assert r.status_code == 201 and r.json()["reduce_only"] is True
        margin = bob.get("/v1/margin").json()[0]
        assert float(margin["initial_margin"]) > 0 and float(margin["available"]) > 0
        # with a position, a leverage change answers that position under the new leverage
        lev = bob.post("/v1/leverage", {"market": PERP, "leverage": 4}).json()
        pos = bob.get("/v1/positions").json()[0]
        fixed = ("market", "side", "size", "entry_price", "leverage", "settle_asset")
        assert {k: lev["position"][k] for k in fixed} == {k: pos[k] for k in fixed}
        assert pos["leverage"] == 4 and lev["leverage"] == 4
        assert lev["margin"]["leverage"] == {PERP: 4}
        assert lev["margin"]["collateral"] == bob.get("/v1/margin").json()[0]["collateral"]
        assert Decimal(lev["margin"]["initial_margin"]) > Decimal(margin["initial_margin"])
        assert admin.health()["invariants_ok"]
