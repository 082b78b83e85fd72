"""The Binance-compatible routes take arbitrary (correctly signed) garbage without a 5xx: every
refusal is a 4xx ``{"code": -NNNN, "msg": ...}``."""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serverproc import DEMO_KEY, DEMO_SECRET, Admin, Server

ROUTES = [
    ("GET", "/api/v3/depth"), ("GET", "/api/v3/ticker/24hr"), ("GET", "/api/v3/klines"),
    ("GET", "/api/v3/aggTrades"), ("GET", "/api/v3/trades"), ("GET", "/api/v3/ticker/bookTicker"),
    ("GET", "/fapi/v1/depth"), ("GET", "/fapi/v1/premiumIndex"), ("GET", "/fapi/v1/klines"),
    ("POST", "/api/v3/order"), ("GET", "/api/v3/order"), ("DELETE", "/api/v3/order"),
    ("DELETE", "/api/v3/openOrders"), ("GET", "/api/v3/openOrders"), ("GET", "/api/v3/allOrders"),
    ("GET", "/api/v3/myTrades"), ("GET", "/api/v3/account"), ("POST", "/fapi/v1/order"),
    ("GET", "/fapi/v3/positionRisk"), ("GET", "/fapi/v3/account"), ("POST", "/fapi/v1/leverage"),
    ("GET", "/fapi/v1/leverageBracket"), ("DELETE", "/fapi/v1/allOpenOrders"),
]
NAMES = ["symbol", "side", "type", "timeInForce", "quantity", "price", "newClientOrderId",
         "orderId", "origClientOrderId", "limit", "interval", "startTime", "endTime", "fromId",
         "reduceOnly", "quoteOrderQty", "leverage", "recvWindow"]
VALUES = st.one_of(
    st.sampled_from(["BTCUSDT", "ETHUSDT", "NOPE", "BUY", "SELL", "LIMIT", "MARKET",
                     "LIMIT_MAKER", "GTC", "IOC", "FOK", "GTX", "1m", "1h", "0.01", "50000",
                     "true", "false", "-1", "0", "1e9", "99999999999999999999999", "", " "]),
    st.text(max_size=30),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=12).map(str),
)


def test_binance_routes_never_5xx(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", BASTION_RATE_KEY="0", BASTION_RATE_IP="0").start()
    statuses: dict[int, int] = {}
    try:
        with httpx.Client(base_url=srv.url, timeout=10) as http:
            @settings(max_examples=400, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(route=st.sampled_from(ROUTES),
                   params=st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=8),
                   signed=st.booleans())
            def run(route: tuple[str, str], params: dict[str, str], signed: bool) -> None:
                method, path = route
                if signed:
                    params = dict(params, timestamp=str(time.time_ns() // 1_000_000))
                query = urlencode(params)
                headers = {"X-MBX-APIKEY": DEMO_KEY}
                if signed:
                    sig = hmac.new(DEMO_SECRET.encode(), query.encode(),
                                   hashlib.sha256).hexdigest()
                    query += "&signature=" + sig
                if method == "POST":
                    headers["content-type"] = "application/x-www-form-urlencoded"
                    r = http.post(path, content=query.encode(), headers=headers)
                else:
                    r = http.request(method, path + "?" + query, headers=headers)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                assert r.status_code < 500, (method, path, params, r.text)
                if r.status_code >= 400:
                    body = r.json()
                    assert isinstance(body["code"], int) and body["code"] < 0 and body["msg"]

            run()
            raw_forms(http)
        assert statuses.get(200, 0) > 20 and sum(statuses.values()) == 400
        assert Admin(srv.url).health()["invariants_ok"]
    finally:
        srv.kill()


#: raw (not url-encoded) order forms, correctly signed, and the Binance code each must get
#: (None: accepted); the order entry reads a plain form in one pass and must read these as
#: ``parse_qsl`` does
_ORDER = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=1000"
RAW_FORMS: list[tuple[bytes, int | None]] = [
    (_ORDER.replace("0.001", "0.00\u0661").encode(), -1013),  # non-ASCII digit
    (_ORDER.encode() + b"&side=SELLX", -1117),  # repeated name: the last wins
    (_ORDER.replace("price=1000", "price=").encode(), -1102),  # empty value
    (_ORDER.encode() + b"&&", None),  # empty fields are skipped
    (_ORDER.encode() + b"&quantity=\xff", -1100),  # not UTF-8
    (_ORDER.encode() + b"".join(b"&k%d=1" % i for i in range(100)), -1100),  # too many
    (_ORDER.encode() + b"&junk=" + b"x" * 70_000, -1000),  # over the body limit
    (_ORDER.encode() + b'&newClientOrderId=x","side":"SELL', None),  # a quote adds nothing
    (_ORDER.encode() + b"&newClientOrderId=a\\u0041%41+", None),  # no JSON unescaping
]


def raw_forms(http: httpx.Client) -> None:
    for form, code in RAW_FORMS:
        signed = form + b"&timestamp=%d" % (time.time_ns() // 1_000_000)
        sig = hmac.new(DEMO_SECRET.encode(), signed, hashlib.sha256).hexdigest()
        r = http.post("/api/v3/order", content=signed + b"&signature=" + sig.encode(),
                      headers={"X-MBX-APIKEY": DEMO_KEY,
                               "content-type": "application/x-www-form-urlencoded"})
        body = r.json()
        if code is None:
            assert r.status_code == 200 and body["side"] == "BUY", (form[-60:], body)
            if b"newClientOrderId" in form:
                want = 'x","side":"SELL' if b'"' in form else "a\\u0041A "
                assert body["clientOrderId"] == want
        else:
            assert 400 <= r.status_code < 500 and body["code"] == code, (form[-60:], body)
