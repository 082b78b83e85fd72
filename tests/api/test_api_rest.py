"""End-to-end tests of the native REST API against a server subprocess on a real socket."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bastion.api.security.auth import sign
from serverproc import ADMIN, DEMO_KEY, DEMO_SECRET, Admin, Client, Server, running


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(tmp_path_factory.mktemp("rest") / "data") as s:
        yield s


@pytest.fixture(scope="module")
def admin(srv: Server) -> Iterator[Admin]:
    a = Admin(srv.url)
    yield a
    a.close()


@pytest.fixture(scope="module")
def alice(srv: Server) -> Iterator[Client]:
    c = Client(srv.url)
    yield c
    c.close()


@pytest.fixture(scope="module")
def bob(admin: Admin) -> Iterator[Client]:
    c = admin.new_account(101)
    yield c
    c.close()


def order(c: Client, **kw: object) -> httpx.Response:
    body = {"market": "BTC-USDT", "side": "buy", "quantity": "0.01", "price": "40000"}
    body.update(kw)  # type: ignore[arg-type]
    return c.place(**body)


def test_public_market_data(alice: Client) -> None:
    t = alice.get("/v1/time", signed=False).json()["server_time"]
    assert abs(t - time.time() * 1000) < 5_000
    markets = {m["market"]: m for m in alice.get("/v1/markets", signed=False).json()}
    assert {"BTC-USDT", "ETH-USDT"} <= set(markets)
    btc = markets["BTC-USDT"]
    assert btc["mode"] == "open" and btc["tick_size"] == "0.01" and btc["base"] == "BTC"
    assert alice.get("/v1/markets/NOPE", signed=False).json()["code"] == "UNKNOWN_MARKET"
    for path in ("book", "trades", "ticker", "candles"):
        assert alice.get(f"/v1/markets/BTC-USDT/{path}", signed=False).status_code == 200


def test_order_lifecycle_and_fills(alice: Client, bob: Client, admin: Admin) -> None:
    r = order(alice, price="41000.5", quantity="0.02", client_order_id="life-1")
    assert r.status_code == 201, r.text
    o = r.json()
    assert o["status"] == "open" and o["price"] == "41000.50" and o["quantity"] == "0.02000000"
    oid = o["order_id"]
    # amend: reduce keeps priority
    r = alice.patch(f"/v1/orders/{oid}", {"quantity": "0.015"})
    assert r.status_code == 200 and r.json()["quantity"] == "0.01500000"
    # bob sells into it
    r = order(bob, side="sell", price="41000", quantity="0.005")
    assert r.status_code == 201 and r.json()["status"] == "filled"
    assert r.json()["average_price"] == "41000.50"
    got = alice.get(f"/v1/orders/{oid}").json()
    assert got["status"] == "partially_filled" and got["filled_quantity"] == "0.00500000"
    assert alice.get("/v1/orders/by-client-id/life-1").json()["order_id"] == oid
    fills = alice.get("/v1/fills", params={"market": "BTC-USDT"}).json()
    mine = [f for f in fills if f["order_id"] == oid]
    assert mine and mine[-1]["liquidity"] == "maker" and mine[-1]["side"] == "buy"
    assert any(o["order_id"] == oid for o in alice.get("/v1/orders/open").json())
    book = alice.get("/v1/markets/BTC-USDT/book", signed=False).json()
    assert ["41000.50", "0.01000000"] in book["bids"]
    trades = alice.get("/v1/markets/BTC-USDT/trades", signed=False).json()
    assert trades[0]["price"] == "41000.50" and trades[0]["taker_side"] == "sell"
    tick = alice.get("/v1/markets/BTC-USDT/ticker", signed=False).json()
    assert tick["last"] == "41000.50" and tick["bid"] == "41000.50"
    # cancel, then cancel again is a clean 404
    r = alice.delete(f"/v1/orders/{oid}")
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    r = alice.delete(f"/v1/orders/{oid}")
    assert r.status_code == 404 and r.json()["code"] == "UNKNOWN_ORDER"
    hist = alice.get("/v1/orders", params={"status": "all"}).json()
    assert any(h["order_id"] == oid and h["status"] == "canceled" for h in hist)
    assert admin.health()["invariants_ok"]


def test_cancel_all_and_balances(alice: Client) -> None:
    before = {b["asset"]: b for b in alice.get("/v1/balances").json()}
    ids = [order(alice, price=str(30000 + i)).json()["order_id"] for i in range(3)]
    held = {b["asset"]: b for b in alice.get("/v1/balances").json()}["USDT"]["held"]
    assert float(held) > float(before["USDT"]["held"])
    r = alice.delete("/v1/orders", params={"market": "BTC-USDT"})
    assert r.status_code == 200
    assert {o["order_id"] for o in r.json()["canceled"]} >= set(ids)
    assert alice.get("/v1/orders/open", params={"market": "BTC-USDT"}).json() == []
    after = {b["asset"]: b for b in alice.get("/v1/balances").json()}
    assert after["USDT"]["total"] == before["USDT"]["total"]
    # nothing left: still a clean answer
    assert alice.delete("/v1/orders").json() == {"canceled": []}


def test_idempotent_client_order_id(alice: Client) -> None:
    first = order(alice, client_order_id="idem-7", price="35000")
    assert first.status_code == 201
    again = order(alice, client_order_id="idem-7", price="35000")
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert again.json()["order_id"] == first.json()["order_id"]
    # different body, same id: still the existing order, never a second one
    other = order(alice, client_order_id="idem-7", price="36000", quantity="0.05")
    assert other.json()["order_id"] == first.json()["order_id"]
    open_ids = [o["order_id"] for o in alice.get("/v1/orders/open").json()
                if o["client_order_id"] == "idem-7"]
    assert open_ids == [first.json()["order_id"]]
    # after it is closed, a repeat still answers with that order
    alice.delete(f"/v1/orders/{first.json()['order_id']}")
    closed = order(alice, client_order_id="idem-7")
    assert closed.json()["order_id"] == first.json()["order_id"]
    assert closed.json()["status"] == "canceled"


@pytest.mark.parametrize(("body", "code"), [
    ({"quantity": "0.000001"}, "LOT_SIZE"),
    ({"quantity": "0.000000001"}, "INVALID_QUANTITY"),
    ({"price": "40000.001"}, "INVALID_PRICE"),
    ({"price": "-1"}, "INVALID_PRICE"),
    ({"price": "1e5"}, "INVALID_PRICE"),
    ({"quantity": "0"}, "INVALID_QUANTITY"),
    ({"quantity": "99999999"}, "MAX_QUANTITY"),
    ({"quantity": "999"}, "INSUFFICIENT_FUNDS"),
    ({"market": "DOGE-EUR"}, "UNKNOWN_MARKET"),
    ({"price": None}, "INVALID_PRICE"),
    ({"type": "market"}, "INVALID_ARGUMENT"),
    ({"side": "hold"}, "MALFORMED_REQUEST"),
    ({"time_in_force": "GTD"}, "MALFORMED_REQUEST"),
    ({"reduce_only": True}, "INVALID_ARGUMENT"),
    ({"post_only": True, "price": "999999"}, "POST_ONLY_WOULD_CROSS"),
    ({"extra": 1}, "MALFORMED_REQUEST"),
])
def test_rejects_have_stable_codes(alice: Client, bob: Client, body: dict[str, object],
                                   code: str) -> None:
    if code == "POST_ONLY_WOULD_CROSS":
        assert order(bob, side="sell", price="60000").status_code == 201
    r = order(alice, **body)
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["code"] == code, r.text
    assert r.json()["message"]


def test_error_bodies_carry_the_typed_detail_in_decimal_units(alice: Client) -> None:
    """Which field broke which bound, in the request's units: order entry (fast path), amend
    (routed) and an edge refusal; a refusal without detail has no detail fields."""
    lot = order(alice, quantity="0.000011").json()  # BTC-USDT lot 0.00001
    assert lot["code"] == "LOT_SIZE"
    assert (lot["field"], lot["limit"], lot["value"]) == ("qty", "0.00001000", "0.00001100")
    funds = order(alice, quantity="999").json()  # a buy spends USDT
    assert (funds["code"], funds["field"]) == ("INSUFFICIENT_FUNDS", "available")
    # the hold: 999 BTC x 40,000 plus the 5 bps taker fee it could pay
    assert funds["value"] == "39979980.00000000 USDT"
    assert funds["limit"].endswith(" USDT")
    decimals = order(alice, price="40000.001").json()
    assert (decimals["field"], decimals["limit"], decimals["value"]) == ("decimals", "2", "3")
    r = order(alice, price="30000")
    assert r.status_code == 201, r.text
    amend = alice.patch(f"/v1/orders/{r.json()['order_id']}", {"quantity": "0.0000101"}).json()
    assert (amend["code"], amend["field"], amend["value"]) == ("LOT_SIZE", "qty", "0.00001010")
    # an amend names no side: the order's own says which asset it spends
    amend = alice.patch(f"/v1/orders/{r.json()['order_id']}", {"quantity": "999"}).json()
    assert (amend["code"], amend["field"]) == ("INSUFFICIENT_FUNDS", "available")
    assert amend["value"].endswith(" USDT") and amend["limit"].endswith(" USDT")
    plain = order(alice, market="DOGE-EUR").json()
    assert plain["code"] == "UNKNOWN_MARKET" and "field" not in plain and "limit" not in plain


def test_malformed_bodies(alice: Client) -> None:
    for raw in (b"{not json", b"[]", b'{"market": 5}', b"\xff\xfe", b"null"):
        r = alice.post("/v1/orders", raw)
        assert r.status_code == 400 and r.json()["code"] in ("MALFORMED_REQUEST",), r.text
    r = alice.get("/v1/orders/abc")
    assert r.status_code == 404
    r = alice.get("/v1/nope", signed=False)
    assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"
    r = alice.request("PUT", "/v1/orders", signed=False)
    assert r.status_code == 405 and r.json()["code"] == "METHOD_NOT_ALLOWED"


def test_auth_failures(srv: Server, alice: Client) -> None:
    anon = Client(srv.url, key=None, secret=None)
    assert anon.get("/v1/balances").json()["code"] == "UNAUTHORIZED"
    bad = Client(srv.url, key=DEMO_KEY, secret="wrong-secret")
    r = bad.get("/v1/balances")
    assert r.status_code == 401 and r.json()["code"] == "INVALID_SIGNATURE"
    unknown = Client(srv.url, key="no-such-key-123", secret="x" * 16)
    assert unknown.get("/v1/balances").json()["code"] == "UNAUTHORIZED"
    stale = alice.get("/v1/balances", ts=int(time.time() * 1000) - 60_000)
    assert stale.status_code == 401 and stale.json()["code"] == "TIMESTAMP_OUTSIDE_WINDOW"
    future = alice.get("/v1/balances", ts=int(time.time() * 1000) + 30_000)
    assert future.json()["code"] == "TIMESTAMP_OUTSIDE_WINDOW"
    # an identical signed read may repeat inside its window (two polls in one millisecond sign
    # the same); a signature reused for anything with an effect is refused
    ts = str(int(time.time() * 1000))
    headers = {"X-BX-APIKEY": DEMO_KEY, "X-BX-TIMESTAMP": ts,
               "X-BX-SIGNATURE": sign(DEMO_SECRET, f"{ts}GET/v1/balances")}
    first_read = httpx.get(srv.url + "/v1/balances", headers=headers)
    assert first_read.status_code == 200
    again = httpx.get(srv.url + "/v1/balances", headers=headers)
    assert again.status_code == 200 and again.json() == first_read.json(), again.text
    raw = b'{"market":"BTC-USDT","side":"buy","quantity":"0.01","price":"30000"}'
    headers = {"X-BX-APIKEY": DEMO_KEY, "X-BX-TIMESTAMP": ts, "content-type":
               "application/json", "X-BX-SIGNATURE": sign(DEMO_SECRET, ts.encode()
                                                          + b"POST/v1/orders" + raw)}
    first = httpx.post(srv.url + "/v1/orders", content=raw, headers=headers)
    assert first.status_code == 201
    r = httpx.post(srv.url + "/v1/orders", content=raw, headers=headers)
    assert r.status_code == 401 and r.json()["code"] == "REPLAYED"
    alice.delete(f"/v1/orders/{first.json()['order_id']}")
    # tampering with the body after signing
    body = b'{"market":"BTC-USDT","side":"buy","quantity":"0.01","price":"30000"}'
    ts = str(int(time.time() * 1000))
    sig = sign(DEMO_SECRET, ts.encode() + b"POST/v1/orders" + body)
    r = httpx.post(srv.url + "/v1/orders", content=body.replace(b"0.01", b"0.02"),
                   headers={"X-BX-APIKEY": DEMO_KEY, "X-BX-TIMESTAMP": ts,
                            "X-BX-SIGNATURE": sig})
    assert r.json()["code"] == "INVALID_SIGNATURE"
    for c in (anon, bad, unknown):
        c.close()


def test_permissions_and_operator_separation(srv: Server, admin: Admin, alice: Client) -> None:
    reader = admin.new_account(102, permissions=["read"])
    assert reader.get("/v1/balances").status_code == 200
    r = order(reader)
    assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN"
    r = reader.post("/v1/withdrawals", {"asset": "USDT", "amount": "1",
                                        "address": "0x" + "11" * 20})
    assert r.json()["code"] == "FORBIDDEN"
    # operator endpoints never accept a trading key, signed or not
    assert alice.get("/admin/health").status_code == 401
    assert alice.post("/admin/deposits", {"account": 1, "asset": "USDT",
                                          "amount": "1"}).status_code == 401
    r = httpx.post(srv.url + "/admin/deposits", json={"account": 1, "asset": "USDT",
                                                      "amount": "1"},
                   headers={"authorization": f"Bearer {DEMO_SECRET}"})
    assert r.status_code == 401
    r = httpx.get(srv.url + "/admin/health", headers={"authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200
    # withdraw permission
    w = admin.new_account(103, permissions=["read", "withdraw"])
    to = "0x" + "11" * 20
    r = w.post("/v1/withdrawals", {"asset": "USDT", "amount": "10.5", "address": to})
    assert r.status_code == 201 and r.json()["fee"] == "1.00000000"
    usdt = {b["asset"]: b for b in w.get("/v1/balances").json()}["USDT"]
    assert usdt["available"] == "999988.50000000"  # amount + fee held, then paid
    r = w.post("/v1/withdrawals", {"asset": "USDT", "amount": "99999999", "address": to})
    assert r.status_code == 400 and r.json()["code"] == "INSUFFICIENT_FUNDS"
    reader.close()
    w.close()


def test_accounts_cannot_see_or_touch_each_other(alice: Client, bob: Client) -> None:
    mine = order(alice, price="33333", client_order_id="private-1").json()
    oid = mine["order_id"]
    assert bob.get(f"/v1/orders/{oid}").status_code == 404
    assert bob.get("/v1/orders/by-client-id/private-1").status_code == 404
    r = bob.delete(f"/v1/orders/{oid}")
    assert r.status_code == 404 and r.json()["code"] == "UNKNOWN_ORDER"
    assert bob.patch(f"/v1/orders/{oid}", {"price": "1"}).status_code == 404
    assert bob.delete("/v1/orders/by-client-id/private-1").status_code == 404
    bob.delete("/v1/orders")  # bob's cancel-all never reaches alice's orders
    assert alice.get(f"/v1/orders/{oid}").json()["status"] == "open"
    assert all(o["order_id"] != oid for o in bob.get("/v1/orders/open").json())
    assert all(f["order_id"] != oid for f in bob.get("/v1/fills").json())
    # the same client order id in another account is a different order
    theirs = order(bob, price="33333", client_order_id="private-1").json()
    assert theirs["order_id"] != oid and theirs["duplicate"] is False
    alice.delete(f"/v1/orders/{oid}")
    bob.delete(f"/v1/orders/{theirs['order_id']}")


def test_operator_mode_change(admin: Admin, alice: Client) -> None:
    r = admin.post("/admin/markets/ETH-USDT/mode", {"mode": "halted", "reason": "drill"})
    assert r.status_code == 200, r.text
    m = alice.get("/v1/markets/ETH-USDT", signed=False).json()
    assert m["mode"] == "halted" and m["mode_reason"] == "drill"
    r = order(alice, market="ETH-USDT", price="3000", quantity="0.1")
    assert r.status_code == 409 and r.json()["code"] == "MARKET_MODE"
    r = admin.post("/admin/markets/ETH-USDT/mode", {"mode": "halted", "reason": "again"})
    assert r.status_code == 409 and r.json()["code"] == "NO_CHANGE"
    assert admin.post("/admin/markets/ETH-USDT/mode", {"mode": "open",
                                                       "reason": "drill over"}).status_code == 200
    r = admin.http.patch("/admin/markets/ETH-USDT", json={"tick_size": "0.05"})
    assert r.status_code == 200, r.text
    assert alice.get("/v1/markets/ETH-USDT", signed=False).json()["tick_size"] == "0.05"
    r = order(alice, market="ETH-USDT", price="3000.01", quantity="0.1")
    assert r.json()["code"] == "TICK_SIZE"


def test_openapi_and_docs(alice: Client) -> None:
    spec = alice.get("/openapi.json", signed=False).json()
    assert spec["openapi"].startswith("3.")
    assert "post" in spec["paths"]["/v1/orders"]
    docs = alice.get("/docs", signed=False)
    assert docs.status_code == 200 and "/docs/assets/swagger-ui-bundle.js" in docs.text
    bundle = alice.get("/docs/assets/swagger-ui-bundle.js", signed=False)
    assert bundle.status_code == 200 and "SwaggerUIBundle" in bundle.text
    assert alice.get("/docs/assets/..%2Fpyproject.toml", signed=False).status_code == 404
    spec30 = alice.get("/docs/openapi-3.0.json", signed=False).json()
    assert spec30["openapi"] == "3.0.3" and spec30["paths"].keys() == spec["paths"].keys()


def test_limits(tmp_path: Path) -> None:
    """Per-key and per-IP limits answer 429 with Retry-After; oversized bodies 413. Slow refill
    rates (1/s per key, 4/s per IP) so that a loaded machine's slow requests still hit them."""
    with running(tmp_path / "data", BASTION_RATE_KEY="1/5", BASTION_RATE_IP="4/20",
                 BASTION_MAX_BODY="2048") as s:
        c = Client(s.url)
        codes = [c.get("/v1/balances").status_code for _ in range(10)]
        assert codes[:5] == [200] * 5 and 429 in codes
        r = c.get("/v1/balances")
        assert r.status_code == 429 and r.json()["code"] == "RATE_LIMITED"
        assert int(r.headers["retry-after"]) >= 1 and "per-key" in r.json()["message"]
        time.sleep(2.2)  # two tokens back: this read and the oversized order below
        assert c.get("/v1/balances").status_code == 200
        big = b'{"market":"' + b"x" * 4000 + b'"}'
        r = c.post("/v1/orders", big)
        assert r.status_code == 413 and r.json()["code"] == "BODY_TOO_LARGE"
        with httpx.Client(base_url=s.url) as h:
            ip = [h.get("/v1/time") for _ in range(60)]
        limited = [r for r in ip if r.status_code == 429]
        assert limited and "per-IP" in limited[0].json()["message"]
        # order entry served by the HTTP protocol directly keeps the per-IP limit
        r = c.post("/v1/orders", {"market": "BTC-USDT", "side": "buy", "type": "limit",
                                  "quantity": "0.01", "price": "30000"})
        assert r.status_code == 429 and "per-IP" in r.json()["message"], r.text
        c.close()


def _raw_order(client_id: str, target: str = "/v1/orders", extra: bytes = b"",
               chunked: bool = False, later_ms: int = 0) -> bytes:
    """A signed native order as raw HTTP/1.1 bytes (the signature covers the path without an
    empty ``?``, as the server reads it)."""
    body = json.dumps({"market": "BTC-USDT", "side": "buy", "type": "limit",
                       "quantity": "0.01", "price": "30000",
                       "client_order_id": client_id}).encode()
    ts = str(time.time_ns() // 1_000_000 + later_ms)
    sig = sign(DEMO_SECRET, ts.encode() + b"POST/v1/orders" + body)
    head = (f"POST {target} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            f"X-BX-APIKEY: {DEMO_KEY}\r\nX-BX-TIMESTAMP: {ts}\r\n"
            f"X-BX-SIGNATURE: {sig}\r\n").encode() + extra
    if chunked:
        return head + b"transfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (
            len(body), body)
    return head + b"content-length: %d\r\n\r\n%s" % (len(body), body)


def _responses(sock: socket.socket, n: int) -> list[tuple[int, dict[str, str], dict[str, object]]]:
    """Read ``n`` responses with a content-length: (status, headers, JSON body) each."""
    buf = b""
    out = []
    while len(out) < n:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {len(out)} responses: {buf!r}"
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        size = int(headers["content-length"])
        while len(buf) < size:
            chunk = sock.recv(65536)
            assert chunk
            buf += chunk
        out.append((int(lines[0].split()[1]), headers, json.loads(buf[:size])))
        buf = buf[size:]
    return out


def test_order_entry_on_raw_sockets(srv: Server) -> None:
    """The order path the HTTP protocol serves directly and the ASGI path (taken by anything
    the direct path does not take: here a ``?`` or a chunked body) answer alike; pipelined
    orders are answered in order; ``Connection: close`` is honoured."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        tag = str(time.time_ns())
        sock.sendall(_raw_order(f"raw-a-{tag}") + _raw_order(f"raw-b-{tag}", "/v1/orders?")
                     + _raw_order(f"raw-c-{tag}", chunked=True))
        got = _responses(sock, 3)
        assert [(st, b["client_order_id"]) for st, _, b in got] == [
            (201, f"raw-{x}-{tag}") for x in "abc"], got
        assert len({b["order_id"] for _, _, b in got}) == 3
        direct, routed = got[0], got[1]
        assert direct[1] == routed[1]  # same headers (content-length alike: same shape)
        assert direct[2].keys() == routed[2].keys()
        assert {k: v for k, v in direct[2].items() if k not in ("order_id", "client_order_id",
                "created_at", "updated_at")} == {
            k: v for k, v in routed[2].items() if k not in ("order_id", "client_order_id",
                                                            "created_at", "updated_at")}
        # a repeated client id answers 200 with the first order, both ways
        sock.sendall(_raw_order(f"raw-a-{tag}", later_ms=1)  # fresh timestamps: fresh signatures
                     + _raw_order(f"raw-a-{tag}", "/v1/orders?", later_ms=2))
        again = _responses(sock, 2)
        assert [(st, b["order_id"], b["duplicate"]) for st, _, b in again] == [
            (200, got[0][2]["order_id"], True)] * 2, again
        # the same signed request again is refused: a signature is used once
        replay = _raw_order(f"raw-d-{tag}")
        sock.sendall(replay + replay)
        first, second = _responses(sock, 2)
        assert first[0] == 201 and second[0] == 401 and second[2]["code"] == "REPLAYED"
        # a WebSocket upgrade on the same connection after a direct order is an upgrade only
        # (the order is not served again)
        sock.sendall(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
        sock.sendall(_raw_order(f"raw-e-{tag}", extra=b"Connection: close\r\n"))
        [(status, headers, _)] = _responses(sock, 1)
        assert status == 201 and headers.get("connection") == "close"
        sock.settimeout(10)
        assert sock.recv(1) == b""
