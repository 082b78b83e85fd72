"""Binance WebSocket streams on the wire: frames, bad input, update-id continuity with the REST
depth for both surfaces, listenKey expiry, and a revoked API key ending its streams."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from clients_support import Stream, ws_base
from serverproc import DEMO_KEY, Admin, Client, Server, running

LISTEN_TTL_MS = 1500


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(tmp_path_factory.mktemp("bstreams") / "data",
                 BASTION_LISTEN_KEY_TTL_MS=str(LISTEN_TTL_MS)) as s:
        yield s


@pytest.fixture(scope="module")
def traders(srv: Server) -> list[Client]:
    admin = Admin(srv.url)
    out = []
    for acct in (801, 802):
        c = admin.new_account(acct, {"USDT": "10000000", "BTC": "1000", "ETH": "1000"})
        assert c.post("/v1/margin", {"asset": "USDT", "amount": "2000000"}).status_code == 200
        out.append(c)
    return out


def stream(srv: Server, path: str) -> Stream:
    return Stream(ws_base(srv.url) + path)


def healthy(s: Stream, rid: int = 999) -> list[str]:
    """The connection still answers (and lists what it is subscribed to)."""
    reply = s.request({"method": "LIST_SUBSCRIPTIONS", "id": rid})
    assert reply["id"] == rid
    result: list[str] = reply["result"]
    return result


def test_frames_and_bad_input(srv: Server) -> None:
    s = stream(srv, "/ws")
    try:
        assert s.request({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}) == \
            {"result": None, "id": 1}
        bad = s.request({"method": "SUBSCRIBE", "params": ["btcusdt@trade", "nosuch@trade",
                                                           "btcusdt@depth7"], "id": 2})
        assert bad["code"] == 2 and "nosuch@trade" in bad["msg"]
        assert healthy(s) == ["btcusdt@trade"]  # all or nothing: nothing was added
        for frame, code in (("not json", 3), ("[1, 2]", 2), ('{"params": [], "id": 3}', 2),
                            ('{"method": "SUBSCRIB", "params": [], "id": 3}', 2),
                            ('{"method": "SUBSCRIBE", "params": "x", "id": 3}', 2),
                            ('{"method": "SUBSCRIBE", "params": [5], "id": 3}', 2),
                            ('{"method": "SET_PROPERTY", "params": ["colour", 1], "id": 3}', 0),
                            ('{"method": "SET_PROPERTY", "params": ["combined", 1], "id": 3}',
                             1),
                            ('{"method": "LIST_SUBSCRIPTIONS", "id": 1.5}', 2)):
            s.send(frame)
            err = s.until(lambda m: isinstance(m, dict) and "code" in m)
            assert err["code"] == code and err["msg"], (frame, err)
        s.send("[" * 30_000 + "]" * 30_000)  # nested past the decoder's depth
        assert s.until(lambda m: isinstance(m, dict) and "code" in m)["code"] == 3
        s.ws.send(b"\x00\xff binary")
        assert s.until(lambda m: isinstance(m, dict) and "code" in m)["code"] == 3
        too_many = [f"btcusdt@kline_{i}" for i in range(2000)]
        err = s.request({"method": "SUBSCRIBE", "params": too_many, "id": 4})
        assert err["code"] == 2 and "too many" in err["msg"]
        assert healthy(s) == ["btcusdt@trade"]
        assert s.request({"method": "GET_PROPERTY", "params": ["combined"], "id": 5}) == \
            {"result": False, "id": 5}
        assert s.request({"method": "UNSUBSCRIBE", "params": ["btcusdt@trade", "never"],
                          "id": 6}) == {"result": None, "id": 6}
        assert healthy(s) == []
    finally:
        s.close()
    c = stream(srv, "/stream?streams=btcusdt@bookTicker/ethusdt@aggTrade/bogus@trade")
    try:
        assert c.recv()["code"] == 2  # the bad name is reported, the good ones are live
        assert sorted(healthy(c)) == ["btcusdt@bookTicker", "ethusdt@aggTrade"]
        assert c.request({"method": "GET_PROPERTY", "params": ["combined"], "id": 7})[
            "result"] is True
    finally:
        c.close()
    f = stream(srv, "/fstream/market/ws/btcusdt@markPrice@1s")
    try:
        mark = f.until(lambda m: m.get("e") == "markPriceUpdate")
        assert mark["s"] == "BTCUSDT" and float(mark["p"]) > 0
        err = f.request({"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 8})
        assert err["code"] == 2  # no ETHUSDT perpetual on the futures surface
    finally:
        f.close()


def _burst(c1: Client, c2: Client, market: str, mid: int) -> None:
    for i in range(40):
        side = "buy" if i % 2 else "sell"
        who = c1 if i % 3 else c2
        off = (i * 37) % 21 - 10
        who.place(market=market, side=side, quantity="0.003", price=f"{mid + off * 10}")


def _local_book(s: Stream, base: str, rest: str, futures: bool,
                busy: Callable[[], bool]) -> dict[str, Any]:
    """Binance's documented local-book algorithm, spot or futures flavour, driven by
    ``s`` (already subscribed to the diff depth), checked against the REST snapshot. It reads
    until ``busy()`` is false and the stream has reached the book's id (a loaded machine can
    pause the traders or the stream for more than a second)."""
    with httpx.Client(base_url=base) as http:
        snap = http.get(rest, params={"symbol": "BTCUSDT", "limit": 1000}).json()
    last = snap["lastUpdateId"]
    bids = {p: q for p, q in snap["bids"]}
    asks = {p: q for p, q in snap["asks"]}
    first = True
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            ev = s.recv(timeout=1.0)
        except TimeoutError:
            if busy():
                continue
            with httpx.Client(base_url=base) as http:
                now = http.get(rest, params={"symbol": "BTCUSDT", "limit": 5}).json()
            if last >= now["lastUpdateId"]:
                break
            continue
        if ev.get("e") != "depthUpdate":
            continue
        if (ev["u"] < last) if futures else (ev["u"] <= last):
            continue
        if first:
            if futures:
                assert ev["U"] <= last <= ev["u"], (ev, last)
            else:
                assert ev["U"] <= last + 1 <= ev["u"], (ev, last)
            first = False
        elif futures:
            assert ev["pu"] == last, (ev, last)
        else:
            assert ev["U"] == last + 1, (ev, last)
        for side, book in (("b", bids), ("a", asks)):
            for p, q in ev[side]:
                if float(q) == 0:
                    book.pop(p, None)
                else:
                    book[p] = q
        last = ev["u"]
    return {"lastUpdateId": last, "bids": bids, "asks": asks}


@pytest.mark.parametrize("futures", [False, True])
def test_depth_ids_continue_the_rest_snapshot(srv: Server, traders: list[Client],
                                              futures: bool) -> None:
    path = "/fstream/public/ws/btcusdt@depth@100ms" if futures else "/ws/btcusdt@depth"
    rest = "/fapi/v1/depth" if futures else "/api/v3/depth"
    market = "BTC-USDT-PERP" if futures else "BTC-USDT"
    s = stream(srv, path)
    try:
        mid = 50_000
        if futures:
            mark = httpx.get(srv.url + "/fapi/v1/premiumIndex",
                             params={"symbol": "BTCUSDT"}).json()["markPrice"]
            mid = round(float(mark))
        _burst(*traders, market, mid)  # before the snapshot: buffered events are dropped
        import threading

        t = threading.Thread(target=_burst, args=(*traders, market, mid))
        t.start()
        local = _local_book(s, srv.url, rest, futures, t.is_alive)
        t.join()
        with httpx.Client(base_url=srv.url) as http:
            snap = http.get(rest, params={"symbol": "BTCUSDT", "limit": 1000}).json()
        assert local["lastUpdateId"] == snap["lastUpdateId"]
        assert sorted(local["bids"].items()) == sorted((p, q) for p, q in snap["bids"])
        assert sorted(local["asks"].items()) == sorted((p, q) for p, q in snap["asks"])
    finally:
        s.close()


def _listen_key(srv: Server, key: str, futures: bool = False) -> str:
    path = "/fapi/v1/listenKey" if futures else "/api/v3/userDataStream"
    r = httpx.post(srv.url + path, headers={"X-MBX-APIKEY": key})
    assert r.status_code == 200, r.text
    lk: str = r.json()["listenKey"]
    return lk


def test_listen_key_rules_and_expiry(srv: Server) -> None:
    lk = _listen_key(srv, DEMO_KEY)
    assert _listen_key(srv, DEMO_KEY) == lk  # a live key is answered again, and extended
    assert httpx.post(srv.url + "/api/v3/userDataStream").json()["code"] == -2014
    assert httpx.post(srv.url + "/api/v3/userDataStream",
                      headers={"X-MBX-APIKEY": "nope-nope-nope"}).json()["code"] == -2015
    s = stream(srv, "/ws/" + lk)
    try:
        assert healthy(s) == [lk]
        for _ in range(3):  # keepalives hold it open past its validity
            time.sleep(LISTEN_TTL_MS / 3000)
            r = httpx.put(srv.url + "/api/v3/userDataStream", params={"listenKey": lk},
                          headers={"X-MBX-APIKEY": DEMO_KEY})
            assert r.json() == {}
        gone = s.until(lambda m: m.get("e") == "listenKeyExpired", timeout=LISTEN_TTL_MS / 1000
                       + 5)
        assert gone["listenKey"] == lk
        assert healthy(s) == []  # the connection stays up for other streams
        r = httpx.put(srv.url + "/api/v3/userDataStream", params={"listenKey": lk},
                      headers={"X-MBX-APIKEY": DEMO_KEY})
        assert r.status_code == 400 and r.json()["code"] == -1125
        err = s.request({"method": "SUBSCRIBE", "params": [lk], "id": 3})
        assert err["code"] == -1125
    finally:
        s.close()
    late = stream(srv, "/ws/" + lk)  # connecting with an expired key
    try:
        assert late.recv()["e"] == "listenKeyExpired"
        assert healthy(late) == []
    finally:
        late.close()


def test_revoked_api_key_ends_its_streams(srv: Server) -> None:
    admin = Admin(srv.url)
    c = admin.new_account(803)
    assert c.key is not None and c.secret is not None
    spot_lk, fut_lk = _listen_key(srv, c.key), _listen_key(srv, c.key, futures=True)
    s = stream(srv, "/ws/" + spot_lk)
    f = stream(srv, "/fstream/private/ws?listenKey=" + fut_lk)
    api = stream(srv, "/ws-api/v3")
    try:
        ts = str(int(time.time() * 1000))
        from bastion.api.security.auth import sign

        payload = f"apiKey={c.key}&timestamp={ts}"
        sub = api.request({"id": "s1", "method": "userDataStream.subscribe.signature",
                           "params": {"apiKey": c.key, "timestamp": ts,
                                      "signature": sign(c.secret, payload)}})
        assert sub["status"] == 200 and sub["result"] == {"subscriptionId": 0}
        replay = api.request({"id": "s2", "method": "userDataStream.subscribe.signature",
                              "params": {"apiKey": c.key, "timestamp": ts,
                                         "signature": sign(c.secret, payload)}})
        assert replay["status"] == 401 and replay["error"]["code"] == -1022
        assert healthy(s) == [spot_lk]
        assert admin.http.delete(f"/admin/keys/{c.key}").status_code == 204
        assert s.until(lambda m: m.get("e") == "listenKeyExpired")["listenKey"] == spot_lk
        assert f.until(lambda m: m.get("e") == "listenKeyExpired")["listenKey"] == fut_lk
        ended = api.until(lambda m: m.get("event", {}).get("e") == "eventStreamTerminated")
        assert ended["subscriptionId"] == 0
        assert healthy(s) == []
        r = httpx.post(srv.url + "/api/v3/userDataStream", headers={"X-MBX-APIKEY": c.key})
        assert r.status_code == 401
    finally:
        for x in (s, f, api):
            x.close()


def test_ws_api_errors(srv: Server) -> None:
    api = stream(srv, "/ws-api/v3")
    try:
        assert api.request({"id": 1, "method": "ping"})["status"] == 200
        err = api.request({"id": 2, "method": "order.place", "params": {}})
        assert err["status"] == 400 and err["error"]["code"] == -1100
        err = api.request({"id": 3, "method": "userDataStream.subscribe.signature",
                           "params": {"apiKey": DEMO_KEY, "timestamp": "1",
                                      "signature": "00"}})
        assert err["status"] in (400, 401) and err["error"]["code"] in (-1021, -1022)
        api.send("{not json")
        assert api.until(lambda m: "error" in m)["error"]["code"] == -1100
        api.send(json.dumps({"id": 4, "method": "ping", "params": []}))
        assert api.until(lambda m: m.get("id") == 4)["error"]["code"] == -1135
        assert api.request({"id": 5, "method": "time"})["result"]["serverTime"] > 0
    finally:
        api.close()


def test_ws_api_replies_carry_the_servers_rate_limits(srv: Server) -> None:
    """Every WebSocket API reply, answer or error, states the per-IP bucket the request
    counted against, as ``exchangeInfo`` states it, with the IP's current use; a burst of
    requests shows as a higher count."""
    want = [lim for lim in httpx.get(srv.url + "/api/v3/exchangeInfo").json()["rateLimits"]
            if lim["rateLimitType"] == "REQUEST_WEIGHT"]
    assert want
    api = stream(srv, "/ws-api/v3")
    try:
        ok = api.request({"id": 1, "method": "ping"})
        err = api.request({"id": 2, "method": "nope"})
        status = api.request({"id": 3, "method": "session.status"})
        assert status["result"]["returnRateLimits"] is True
        for reply in (ok, err, status):
            got = reply["rateLimits"]
            assert [{k: v for k, v in lim.items() if k != "count"} for lim in got] == want
            assert all(lim["count"] >= 1 for lim in got)
        for i in range(60):  # within the per-connection frame burst
            api.send(json.dumps({"id": 100 + i, "method": "ping"}))
        last = api.until(lambda m: m.get("id") == 159)
        assert last["rateLimits"][0]["count"] > ok["rateLimits"][0]["count"]
    finally:
        api.close()


def test_partial_depth_is_the_top_of_the_rest_book(srv: Server, traders: list[Client]) -> None:
    _burst(*traders, "BTC-USDT", 50_000)
    with httpx.Client(base_url=srv.url) as http:
        snap = http.get("/api/v3/depth", params={"symbol": "BTCUSDT", "limit": 5}).json()
    s = stream(srv, "/ws/btcusdt@depth5@100ms")
    try:
        top = s.until(lambda m: "lastUpdateId" in m)
        assert top == snap and len(top["bids"]) == 5
    finally:
        s.close()
