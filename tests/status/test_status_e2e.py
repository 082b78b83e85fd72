"""Issue 6 end to end through the real server: the operator halts a market with the trading
operator API (a journaled command), and the status page, its JSON and its WebSocket tell users
within 2 s; resuming and resolving the incident with an update is visible the same way."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from serverproc import Admin, running


def _component(summary: dict[str, Any], cid: str) -> dict[str, Any]:
    return next(c for c in summary["components"] if c["id"] == cid)


def _poll(fn: Any, timeout: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def test_operator_halt_shows_on_status_page_within_two_seconds(tmp_path: Path) -> None:
    with running(tmp_path / "data") as srv:
        admin = Admin(srv.url)
        http = httpx.Client(base_url=srv.url, timeout=5)
        summary = http.get("/api/v2/summary.json").json()
        assert _component(summary, "market-btc-usdt")["status"] == "operational"
        assert summary["status"]["indicator"] == "none"

        t0 = time.monotonic()
        r = admin.post("/admin/markets/BTC-USDT/mode",
                       {"mode": "halted", "reason": "drill: funding index guard"})
        assert r.status_code == 200, r.text

        def outage() -> dict[str, Any] | None:
            s = http.get("/api/v2/summary.json").json()
            bad = _component(s, "market-btc-usdt")["status"] == "major_outage"
            incident = [i for i in s["incidents"]
                        if "market-btc-usdt" in [c["id"] for c in i["components"]]]
            return s if bad and incident else None

        s = _poll(outage)
        assert s, "halt not visible in summary.json within 2 s"
        assert time.monotonic() - t0 < 2.0
        assert s["status"]["indicator"] in ("major", "critical")
        html = _poll(lambda: (t := http.get("/status").text) and "major outage" in t.lower()
                     and t)
        assert html and "BTC-USDT" in html
        okx = http.get("/api/v5/system/status").json()
        assert okx["code"] == "0"

        # an operator may not claim the halted market is fine
        r = admin.http.put("/admin/status/components/market-btc-usdt/status",
                           json={"status": "operational"})
        assert r.status_code == 409 and r.json()["code"], r.text

        incident = next(i for i in s["incidents"]
                        if "market-btc-usdt" in [c["id"] for c in i["components"]])
        r = admin.post(f"/admin/status/incidents/{incident['id']}/updates",
                       {"status": "identified", "body": "A guard halted BTC-USDT; no trades on bad data."})
        assert r.status_code == 200, r.text

        r = admin.post("/admin/markets/BTC-USDT/mode", {"mode": "open", "reason": "drill over"})
        assert r.status_code == 200, r.text
        assert _poll(lambda: _component(http.get("/api/v2/summary.json").json(),
                                         "market-btc-usdt")["status"] == "operational")
        r = admin.post(f"/admin/status/incidents/{incident['id']}/resolve",
                       {"body": "Trading resumed; all orders intact."})
        assert r.status_code == 200, r.text
        unresolved = http.get("/api/v2/incidents/unresolved.json").json()["incidents"]
        assert incident["id"] not in [i["id"] for i in unresolved]
        done = next(i for i in http.get("/api/v2/incidents.json").json()["incidents"]
                    if i["id"] == incident["id"])
        assert done["status"] == "resolved"
        bodies = [u["body"] for u in done["incident_updates"]]
        assert "Trading resumed; all orders intact." in bodies
        assert any("guard halted" in b for b in bodies)
        http.close()
        admin.close()
