"""The Binance surface reports values from state, not constants (issue 11, finding 12):
commission rates, self-trade prevention mode, liquidation price, realized PnL per fill and
maintenance margin per tier."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from bastion.api.native.perps import liquidation_price
from bastion.api.read.model import ReadModel
from bastion.api.security.auth import sign
from perp_harness import PERP, PX, PerpHarness
from serverproc import ADMIN, DEMO_KEY, DEMO_SECRET, Admin, Server, running


@pytest.mark.parametrize(("lots", "long"), [(800, True), (450, True), (300, False),
                                            (950, False), (200, False)])
def test_liquidation_price_is_where_margin_meets_maintenance(lots: int, long: bool) -> None:
    h = PerpHarness(accounts=[1, 2, 3])
    h.open(1 if long else 2, 2 if long else 1, lots)
    h.open(3, 2, 7, PX + 50)  # account 2 also holds something else in size
    pos = h.engine.perp.positions[PERP][1]
    lp = liquidation_price(h.engine, pos)
    pm = h.engine.perp.markets[PERP]
    ma = h.engine.perp.margins[(1, "USDT")]

    def safe(mark: int) -> bool:
        pm.mark = mark
        r = h.engine.perp.risk(ma)
        return r.equity >= r.maintenance

    assert lp > 0
    step = 1 if long else -1
    assert safe(lp) and not safe(lp - step * 2)  # just past it, the account is liquidatable
    assert safe(lp + step * 1000)


def test_realized_pnl_is_split_per_fill_exactly() -> None:
    h = PerpHarness(accounts=[1, 2, 3])
    rm = ReadModel(lambda: h.engine)
    steps: list[tuple[int, str, int, int]] = [
        (1, "buy", 40, PX), (1, "sell", 15, PX + 300), (1, "sell", 10, PX - 700),
        (1, "buy", 30, PX + 100), (1, "sell", 20, PX + 900), (1, "sell", 50, PX + 20)]
    for account, side, lots, price in steps:
        other = 2 if account != 2 else 3
        rm.apply(h.expect_ok(h.order(other, "sell" if side == "buy" else "buy", lots, price)))
        rm.apply(h.expect_ok(h.order(account, side, lots, price)))
    pos = h.engine.perp.positions[PERP][1]
    fills = rm.accounts[1].fills
    assert any(f.realized != 0 for f in fills)
    assert sum(f.realized for f in fills) == pos.realized_pnl
    other = h.engine.perp.positions[PERP][2]
    assert sum(f.realized for f in rm.accounts[2].fills) == other.realized_pnl


# ---------------------------------------------------------------- over HTTP

@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(tmp_path_factory.mktemp("bvalues") / "data",
                 BASTION_FEEDER_INTERVAL="0.2") as s:
        yield s


def bget(srv: Server, path: str, key: str = DEMO_KEY, secret: str = DEMO_SECRET,
         method: str = "GET", **params: Any) -> Any:
    params["timestamp"] = time.time_ns() // 1_000_000
    q = urlencode(params)
    r = httpx.request(method, f"{srv.url}{path}?{q}&signature={sign(secret, q)}",
                      headers={"X-MBX-APIKEY": key}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_commissions_and_tiers_come_from_the_markets(srv: Server) -> None:
    markets = {m["market"]: m for m in httpx.get(srv.url + "/v1/markets").json()}
    spot = [m for m in markets.values() if not m["market"].endswith("PERP")]
    acct = bget(srv, "/api/v3/account")
    top_maker = max(Decimal(m["maker_fee"]) for m in spot)
    assert Decimal(acct["commissionRates"]["maker"]) == top_maker
    assert acct["makerCommission"] == int(top_maker * 10_000)
    one = bget(srv, "/api/v3/account/commission", symbol="BTCUSDT")
    assert Decimal(one["standardCommission"]["taker"]) == \
        Decimal(markets["BTC-USDT"]["taker_fee"])
    fee = bget(srv, "/fapi/v1/commissionRate", symbol="BTCUSDT")
    assert Decimal(fee["makerCommissionRate"]) == Decimal(markets["BTC-USDT-PERP"]["maker_fee"])
    info = httpx.get(srv.url + "/fapi/v1/exchangeInfo").json()["symbols"][0]
    brackets = bget(srv, "/fapi/v1/leverageBracket", symbol="BTCUSDT")[0]["brackets"]
    assert Decimal(info["maintMarginPercent"]) == \
        Decimal(str(brackets[0]["maintMarginRatio"])) * 100
    assert Decimal(info["requiredMarginPercent"]) == \
        Decimal(100) / brackets[0]["initialLeverage"]


def test_stp_liquidation_price_and_realized_pnl_over_binance(srv: Server) -> None:
    admin = Admin(srv.url, ADMIN)
    a = admin.new_account(71, {"USDT": "100000"})
    b = admin.new_account(72, {"USDT": "100000"})
    for c in (a, b):
        assert c.post("/v1/margin", {"asset": "USDT", "amount": "2500",
                                     "direction": "add"}).status_code in (200, 201)
    placed = bget(srv, "/api/v3/order", a.key or "", a.secret or "", "POST", symbol="BTCUSDT",
                  side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.001",
                  price="1000", selfTradePreventionMode="EXPIRE_BOTH")
    assert placed["selfTradePreventionMode"] == "EXPIRE_BOTH"
    mark = Decimal(bget(srv, "/fapi/v1/premiumIndex", symbol="BTCUSDT")["markPrice"])
    px = str(mark.quantize(Decimal("0.1")))
    for lots, (buyer, seller) in ((3, (a, b)), (1, (b, a))):
        qty = str(Decimal(lots) / 10)
        bget(srv, "/fapi/v1/order", seller.key or "", seller.secret or "", "POST",
             symbol="BTCUSDT", side="SELL", type="LIMIT", timeInForce="GTC", quantity=qty,
             price=px)
        bget(srv, "/fapi/v1/order", buyer.key or "", buyer.secret or "", "POST",
             symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity=qty,
             price=px)
    risk = bget(srv, "/fapi/v2/positionRisk", a.key or "", a.secret or "", symbol="BTCUSDT")
    assert Decimal(risk[0]["positionAmt"]) == Decimal("0.2")
    liq = Decimal(risk[0]["liquidationPrice"])
    assert 0 < liq < mark
    trades = bget(srv, "/fapi/v1/userTrades", a.key or "", a.secret or "", symbol="BTCUSDT")
    native = a.get("/v1/positions").json()
    pos = next(p for p in native if p["market"] == "BTC-USDT-PERP")
    assert sum(Decimal(t["realizedPnl"]) for t in trades) == Decimal(pos["realized_pnl"])
    admin.close()


def test_exchange_info_rate_limits_are_the_servers_own(srv: Server,
                                                       tmp_path: Any) -> None:
    """``rateLimits`` states the buckets this server enforces (default settings here), and a
    server configured otherwise states its own: a fractional rate per minute, a disabled
    bucket left out."""
    from bastion.api.config import Settings

    d = Settings()
    want = [{"rateLimitType": "REQUEST_WEIGHT", "interval": "SECOND", "intervalNum": 1,
             "limit": int(d.ip_rate[0])},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 1,
             "limit": int(d.key_rate[0])}]
    for path in ("/api/v3/exchangeInfo", "/fapi/v1/exchangeInfo", "/dapi/v1/exchangeInfo"):
        assert httpx.get(srv.url + path).json()["rateLimits"] == want, path
    with running(tmp_path / "data", BASTION_RATE_KEY="0", BASTION_RATE_IP="2.5/50") as other:
        got = httpx.get(other.url + "/api/v3/exchangeInfo").json()["rateLimits"]
    assert got == [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                    "limit": 150}]
