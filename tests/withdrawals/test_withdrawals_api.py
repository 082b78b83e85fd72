"""Withdrawals and deposits through the real server and the real simulator: native routes,
bad input (clear error, nothing held), idempotent client ids, cancel, operator review and
pause, deposits credited once, and unmodified ccxt (withdraw, fetch_withdrawals,
fetch_deposits, fetch_deposit_address, fetch_currencies, fetch_status)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from ccxt_support import binance
from custody_support import Sim
from serverproc import DEMO_KEY, DEMO_SECRET, Admin, Client, Server

ETH = "0x" + "7e" * 20
BTC = "bc1q" + "z" * 38


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Sim]]:
    root = tmp_path_factory.mktemp("wd-api")
    sim = Sim(root / "sim", block_ms=100).start()
    server = Server(root / "node", BASTION_CUSTODY_URL=sim.url,
                    BASTION_FEEDER_INTERVAL="0").start()
    yield server, sim
    server.kill()
    sim.stop()


def _wait(pred: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _balance(c: Client, asset: str) -> dict[str, str]:
    rows = c.get("/v1/balances").json()
    return next(b for b in rows if b["asset"] == asset)


def test_bad_input_gets_a_clear_error_and_holds_nothing(env: tuple[Server, Sim]) -> None:
    server, _ = env
    admin = Admin(server.url)
    c = admin.new_account(51, {"ETH": "10", "BTC": "1"}, ["read", "trade", "withdraw"])
    ro = admin.new_account(52, {"ETH": "10"}, ["read", "trade"])
    before = {a: _balance(c, a) for a in ("ETH", "BTC")}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"asset": "ETH", "amount": "1", "address": BTC}, 400, "INVALID_ADDRESS"),
        ({"asset": "BTC", "amount": "0.1", "address": ETH}, 400, "INVALID_ADDRESS"),
        ({"asset": "ETH", "amount": "1", "address": "0x" + "g" * 40}, 400, "INVALID_ADDRESS"),
        ({"asset": "ETH", "amount": "1", "address": ""}, 400, "INVALID_ADDRESS"),
        ({"asset": "ETH", "amount": "1", "address": "0x" + "٣" * 40}, 400, "INVALID_ADDRESS"),
        ({"asset": "ETH", "amount": "0.0001", "address": ETH}, 400, "BELOW_MINIMUM"),
        ({"asset": "ETH", "amount": "11", "address": ETH}, 400, "INSUFFICIENT_FUNDS"),
        ({"asset": "ETH", "amount": "9.9999", "address": ETH}, 400, "INSUFFICIENT_FUNDS"),
        ({"asset": "ETH", "amount": "-1", "address": ETH}, 400, "INVALID_AMOUNT"),
        ({"asset": "ETH", "amount": "1e3", "address": ETH}, 400, "INVALID_AMOUNT"),
        ({"asset": "ETH", "amount": "0.000000001", "address": ETH}, 400, "INVALID_AMOUNT"),
        ({"asset": "DOGE", "amount": "1", "address": ETH}, 400, "UNKNOWN_ASSET"),
        ({"asset": "ETH", "amount": "1"}, 400, "MALFORMED_REQUEST"),
        ({"asset": "ETH", "amount": "1", "address": ETH, "client_id": "x" * 65}, 400,
         "MALFORMED_REQUEST"),
    ]
    for body, status, code in cases:
        r = c.post("/v1/withdrawals", body)
        assert (r.status_code, r.json()["code"]) == (status, code), (body, r.text)
        assert r.json()["message"]
    r = ro.post("/v1/withdrawals", {"asset": "ETH", "amount": "1", "address": ETH})
    assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN"
    assert {a: _balance(c, a) for a in ("ETH", "BTC")} == before
    assert c.get("/v1/withdrawals").json() == []
    # the same client id twice: one withdrawal, held once
    body = {"asset": "ETH", "amount": "1", "address": ETH, "client_id": "once"}
    first = c.post("/v1/withdrawals", body)
    again = c.post("/v1/withdrawals", body)
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert len(c.get("/v1/withdrawals").json()) == 1
    w = _wait(lambda: (lambda x: x if x["state"] == "confirmed" else None)(
        c.get(f"/v1/withdrawals/{first.json()['id']}").json()))
    assert w["txid"]
    spent = 1 * 10**8 + int(float(w["fee"]) * 10**8)
    after = _balance(c, "ETH")
    assert round(float(before["ETH"]["available"]) * 1e8) - round(
        float(after["available"]) * 1e8) == spent


def test_cancel_review_and_pause(env: tuple[Server, Sim]) -> None:
    server, sim = env
    admin = Admin(server.url)
    c = admin.new_account(53, {"BTC": "30"}, ["read", "withdraw"])
    r = admin.post("/admin/withdrawals/pause", {"asset": "BTC", "reason": "wallet upgrade"})
    assert r.status_code == 200 and r.json()["paused"]
    r = c.post("/v1/withdrawals", {"asset": "BTC", "amount": "0.5", "address": BTC})
    assert r.status_code == 409 and r.json()["code"] == "WITHDRAWALS_PAUSED"
    assert "wallet upgrade" in r.json()["message"]
    assert admin.post("/admin/withdrawals/resume",
                      {"asset": "BTC", "reason": "done"}).status_code == 200
    big = c.post("/v1/withdrawals", {"asset": "BTC", "amount": "11", "address": BTC}).json()
    assert big["state"] == "risk_review"  # above the manual-approval amount
    small = c.post("/v1/withdrawals", {"asset": "BTC", "amount": "0.5", "address": BTC}).json()
    queue = admin.get("/admin/withdrawals").json()
    assert any(w["id"] == big["id"] for w in queue["open"])
    r = c.delete(f"/v1/withdrawals/{big['id']}")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    r = admin.post(f"/admin/withdrawals/{big['id']}/approve", {})
    assert r.status_code == 409 and r.json()["code"] == "WITHDRAWAL_STATE"
    for wid in ("²", "9" * 40, "-1", "1e3", "%C2%B2"):
        r = admin.post(f"/admin/withdrawals/{wid}/approve", {})
        assert r.status_code == 404 and r.json()["code"] == "UNKNOWN_WITHDRAWAL", (wid, r.text)
        if wid.isascii():  # the test client signs the path as written, so send it encoded
            r = c.get(f"/v1/withdrawals/{wid}")
            assert r.status_code == 404 and r.json()["code"] == "UNKNOWN_WITHDRAWAL", (wid, r.text)
    big2 = c.post("/v1/withdrawals", {"asset": "BTC", "amount": "12", "address": BTC}).json()
    r = admin.post(f"/admin/withdrawals/{big2['id']}/reject", {"reason": "unusual"})
    assert r.status_code == 200 and r.json()["state"] == "rejected"
    _wait(lambda: c.get(f"/v1/withdrawals/{small['id']}").json()["state"] == "confirmed")
    r = c.delete(f"/v1/withdrawals/{small['id']}")
    assert r.status_code == 409 and r.json()["code"] == "WITHDRAWAL_STATE"
    bal = _balance(c, "BTC")
    fee = float(small["fee"])
    assert abs(float(bal["available"]) - (30 - 0.5 - fee)) < 1e-9
    assert sim.ledger()["double_sends"] == {}


def test_deposits_are_credited_once(env: tuple[Server, Sim]) -> None:
    server, sim = env
    admin = Admin(server.url)
    c = admin.new_account(54, {"USDT": "1"}, ["read"])
    addr = c.get("/v1/deposit-address", params={"asset": "ETH"}).json()["address"]
    assert addr == c.get("/v1/deposit-address", params={"asset": "ETH"}).json()["address"]
    sim.fault("duplicate_delivery", "ETH")
    r = sim.http.post("/v1/deposits", json={"asset": "ETH", "address": addr,
                                            "amount": 250_000_000})
    txid = r.json()["txid"]
    seen = _wait(lambda: [d for d in c.get("/v1/deposits").json() if d["txid"] == txid])
    assert seen[0]["amount"] == "2.50000000"
    done = _wait(lambda: [d for d in c.get("/v1/deposits").json()
                          if d["txid"] == txid and d["state"] == "credited"])
    assert done[0]["confirmations"] >= done[0]["required"]
    time.sleep(1.0)  # more confirmations and duplicated listings change nothing
    sim.fault("ok")
    assert _balance(c, "ETH")["available"] == "2.50000000"
    assert len(c.get("/v1/deposits").json()) == 1
    assert Admin(server.url).health()["invariants_ok"]


def test_ccxt_withdraw_and_history(env: tuple[Server, Sim]) -> None:
    server, _ = env
    ex = binance(server.url, DEMO_KEY, DEMO_SECRET)
    ex.options["fetchCurrencies"] = True
    currencies = ex.fetch_currencies()
    assert currencies["ETH"]["withdraw"] is True and currencies["ETH"]["deposit"] is True
    assert ex.fetch_status()["status"] == "ok"
    ex.load_markets()
    admin = Admin(server.url)
    before = ex.fetch_balance()["ETH"]
    big = ex.withdraw("ETH", 150, ETH)  # above the manual-review amount: stays held
    held = ex.fetch_balance()["ETH"]
    assert held["used"] == pytest.approx(before["used"] + 150.0005)
    assert held["total"] == pytest.approx(before["total"])
    assert admin.post(f"/admin/withdrawals/{big['id']}/reject", {"reason": "test"}
                      ).status_code == 200
    assert ex.fetch_balance()["ETH"] == before
    tx = ex.withdraw("ETH", 0.25, ETH, {"withdrawOrderId": "ccxt-1"})
    assert tx["id"]
    rows = _wait(lambda: [w for w in ex.fetch_withdrawals("ETH") if w["id"] == tx["id"]
                          and w["status"] == "ok"])
    assert rows[0]["amount"] == 0.25 and rows[0]["txid"] and rows[0]["address"] == ETH
    addr = ex.fetch_deposit_address("BTC")
    assert addr["address"].startswith("bc1") and addr["currency"] == "BTC"
    assert isinstance(ex.fetch_deposits("BTC"), list)
    r = admin.post("/admin/markets/ETH-USDT/mode", {"mode": "halted", "reason": "drill"})
    assert r.status_code == 200, r.text
    status = ex.fetch_status()
    assert status["status"] == "maintenance" and "ETH-USDT halted" in status["info"]["detail"]
    admin.post("/admin/markets/ETH-USDT/mode", {"mode": "open", "reason": "drill over"})
    assert ex.fetch_status()["status"] == "ok"
    admin.post("/admin/withdrawals/pause", {"asset": "ETH", "reason": "drill"})
    try:
        ex2 = binance(server.url, DEMO_KEY, DEMO_SECRET)
        ex2.options["fetchCurrencies"] = True
        assert ex2.fetch_currencies()["ETH"]["withdraw"] is False
    finally:
        admin.post("/admin/withdrawals/resume", {"asset": "ETH", "reason": "drill over"})


def test_ccxt_withdraw_needs_the_permission(env: tuple[Server, Sim]) -> None:
    import ccxt

    server, _ = env
    admin = Admin(server.url)
    ro = admin.new_account(55, {"ETH": "5"}, ["read", "trade"])
    ex = binance(server.url, ro.key, ro.secret)
    ex.load_markets()
    with pytest.raises(ccxt.AuthenticationError) as err:  # Binance: -2015 for a missing right
        ex.withdraw("ETH", 1, ETH)
    assert "-2015" in str(err.value)
    assert ro.get("/v1/withdrawals").json() == []
