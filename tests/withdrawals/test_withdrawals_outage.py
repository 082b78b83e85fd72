"""A custody outage under withdrawal traffic: the asset's status component turns degraded
within 10 s by itself ("Withdrawals of ETH are delayed", queue depth, oldest age), recovers by
itself, and the queue drains in order.

The issue asks for a 60 s outage; CI runs 12 s (``--long`` runs the full 60 s)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from custody_support import Sim
from serverproc import Admin, Server

ETH = "0x" + "3c" * 20


def _component(server: Server, asset: str) -> dict[str, Any]:
    import httpx

    comps = httpx.get(server.url + "/api/v2/components.json", timeout=5).json()["components"]
    return next(c for c in comps if c["name"] == f"{asset} deposits & withdrawals")


def test_custody_outage_degrades_and_recovers_by_itself(tmp_path: Path,
                                                        request: pytest.FixtureRequest
                                                        ) -> None:
    outage_s = 60.0 if request.config.getoption("--long") else 12.0
    sim = Sim(tmp_path / "sim", block_ms=100).start()
    server = Server(tmp_path / "node", BASTION_CUSTODY_URL=sim.url,
                    BASTION_CUSTODY_TIMEOUT="0.5", BASTION_FEEDER_INTERVAL="0").start()
    admin = Admin(server.url)
    try:
        c = admin.new_account(61, {"ETH": "100"}, ["read", "withdraw"])
        warm = c.post("/v1/withdrawals", {"asset": "ETH", "amount": "0.5", "address": ETH})
        assert warm.status_code == 201
        deadline = time.monotonic() + 20
        while c.get(f"/v1/withdrawals/{warm.json()['id']}").json()["state"] != "confirmed":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert _component(server, "ETH")["status"] == "operational"

        sim.fault("down", "ETH")
        t_down = time.monotonic()
        ids = []
        degraded_after = None
        while time.monotonic() - t_down < outage_s:
            if len(ids) < 30:  # user traffic keeps arriving during the outage
                r = c.post("/v1/withdrawals", {"asset": "ETH", "amount": f"0.{len(ids) + 10}",
                                               "address": ETH})
                assert r.status_code == 201, r.text
                ids.append(r.json()["id"])
            comp = _component(server, "ETH")
            if degraded_after is None and comp["status"] == "degraded_performance":
                degraded_after = time.monotonic() - t_down
                reason = comp["reason"]
                assert reason.startswith("Withdrawals of ETH are delayed"), reason
                assert "queued" in reason and "oldest waiting" in reason
            time.sleep(0.2)
        assert degraded_after is not None and degraded_after <= 10.0, degraded_after
        # the pipeline reports the queue on its tick: the last withdrawal shows by the next one
        deadline = time.monotonic() + 5
        while True:
            comp = _component(server, "ETH")
            assert comp["status"] == "degraded_performance"
            if f"{len(ids)} queued" in comp["reason"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert f"{len(ids)} queued" in comp["reason"], comp["reason"]
        incidents = admin.get("/api/v2/incidents/unresolved.json").json()["incidents"]
        assert any("Withdrawals of ETH are delayed" in u["body"]
                   for i in incidents for u in i["incident_updates"])
        queue = admin.get("/admin/withdrawals").json()["assets"]["ETH"]
        assert queue["depth"] == len(ids) and queue["worker"]["breaker"] != "closed"

        sim.fault("ok")
        t_up = time.monotonic()
        while True:
            states = {w["id"]: w["state"] for w in c.get("/v1/withdrawals").json()}
            if all(states[i] == "confirmed" for i in ids):
                break
            assert time.monotonic() - t_up < 60, states
            time.sleep(0.2)
        drained_s = time.monotonic() - t_up
        while _component(server, "ETH")["status"] != "operational":
            assert time.monotonic() - t_up < 30
            time.sleep(0.2)
        print(f"outage {outage_s:.0f} s: degraded after {degraded_after:.1f} s, "
              f"{len(ids)} queued drained {drained_s:.1f} s after recovery")
        sends = [w for w in sim.ledger()["withdrawals"] if w["reference"] in ids]
        sends.sort(key=lambda w: (w["height"], w["accepted_ms"]))
        assert [w["reference"] for w in sends] == sorted(ids, key=int)  # in order
    finally:
        server.kill()
        sim.stop()
