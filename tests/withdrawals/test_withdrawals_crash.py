"""200 withdrawals while the custody simulator misbehaves in every mode and the node (with its
withdrawal worker) is SIGKILLed at random points. Afterwards every withdrawal is confirmed, or
failed and refunded, exactly once (counted in a clean replay of the journal); the simulator's
ledger shows no double send; balances are conserved.

``BASTION_WD_KILLS`` sets the number of kills (default 6 in CI; ``--long`` runs 20)."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import httpx
import pytest

from bastion.core import events as E
from bastion.core.codec import decode_command
from bastion.core.engine import Engine
from bastion.journal.local import LocalJournal
from custody_support import Sim
from serverproc import Admin, Client, Server

N = 200
MODES = ["crash_after_accept", "duplicate_delivery", "down", "slow", "ok"]
GOOD = {"ETH": "0x" + "5a" * 20, "BTC": "bc1q" + "q" * 38}
BLOCKED = "0x" + "dd" * 20  # the chain fails sends to it: failed and refunded


def _plan(rng: random.Random) -> list[dict[str, str]]:
    out = []
    for i in range(N):
        asset = "ETH" if i % 3 else "BTC"
        address = BLOCKED if asset == "ETH" and i % 10 == 1 else GOOD[asset]
        out.append({"asset": asset, "amount": f"0.0{rng.randint(10, 99)}", "address": address,
                    "client_id": f"wd-{i}"})
    return out


def _journal_outcomes(data: Path) -> dict[int, list[str]]:
    """Replay the whole journal into a fresh engine; every final state event per withdrawal."""
    eng = Engine()
    finals: dict[int, list[str]] = {}
    journal = LocalJournal(data / "journal", archive_dir=data / "archive" / "journal",
                           readonly=True)
    try:
        for _seq, payload in journal.read(1):
            for ev in eng.apply(decode_command(payload)):
                if type(ev) is E.WithdrawalUpdated and ev.state in ("confirmed", "failed",
                                                                     "cancelled", "rejected"):
                    finals.setdefault(ev.wid, []).append(ev.state)
    finally:
        journal.close()
    assert eng.check_invariants() == []
    return finals


def test_withdrawals_survive_custody_faults_and_node_kills(tmp_path: Path,
                                                           request: pytest.FixtureRequest
                                                           ) -> None:
    kills = int(os.environ.get("BASTION_WD_KILLS", "20" if request.config.getoption("--long")
                               else "6"))
    seed = int(os.environ.get("BASTION_WD_SEED", str(random.randrange(2**32))))
    rng = random.Random(seed)
    print(f"seed {seed}, {kills} kills")
    sim = Sim(tmp_path / "sim", block_ms=100).start()
    sim.http.post("/blocked", json={"address": BLOCKED})
    data = tmp_path / "node"
    env = {"BASTION_CUSTODY_URL": sim.url, "BASTION_CUSTODY_TIMEOUT": "0.5",
           "BASTION_FEEDER_INTERVAL": "0"}
    server = Server(data, **env).start()
    plan = _plan(rng)
    sent: dict[str, dict] = {}
    try:
        start_balances = _balances(server)
        schedule = MODES + [rng.choice(MODES) for _ in range(max(0, kills + 1 - len(MODES)))]
        rng.shuffle(schedule)  # every mode at least once, in a random order
        for k in range(kills + 1):
            sim.fault(schedule[k % len(schedule)], rng.choice(["ETH", "BTC", None]),
                      delay_ms=800)
            deadline = time.monotonic() + rng.uniform(0.3, 2.5)
            client = Client(server.url, timeout=3.0)
            try:
                while time.monotonic() < deadline and len(sent) < N:
                    req = plan[len(sent)]
                    r = client.post("/v1/withdrawals", req)
                    assert r.status_code in (200, 201), r.text
                    sent[req["client_id"]] = r.json()
                while time.monotonic() < deadline:
                    time.sleep(0.05)
            except httpx.HTTPError:
                pass  # the kill below may race a request: it is re-sent with its client id
            finally:
                client.close()
            if k < kills:
                server.kill()
                server = Server(data, port=server.port, **env).start()
        sim.fault("ok")
        client = Client(server.url, timeout=10.0)
        for req in plan[len(sent):]:  # the rest, and any in-flight one again (idempotent)
            r = client.post("/v1/withdrawals", req)
            assert r.status_code in (200, 201), r.text
            sent[req["client_id"]] = r.json()
        final = _wait_final(client, 120)
        client.close()
        end_balances = _balances(server)
        health = Admin(server.url).health()
    finally:
        server.kill()
        ledger = sim.ledger()
        sim.stop()
    assert health["invariants_ok"], health
    by_cid = {w["client_id"]: w for w in final}
    assert sorted(by_cid) == sorted(r["client_id"] for r in plan)  # one withdrawal each
    assert {w["state"] for w in final} <= {"confirmed", "failed"}
    for w in final:
        blocked = w["address"] == BLOCKED
        assert w["state"] == ("failed" if blocked else "confirmed"), w
    assert ledger["double_sends"] == {}
    sends = {w["reference"]: w for w in ledger["withdrawals"]}
    for w in final:
        assert w["id"] in sends, f"withdrawal {w['id']} never reached custody"
        assert sends[w["id"]]["status"] == w["state"]
        if w["state"] == "confirmed":
            assert sends[w["id"]]["txid"] == w["txid"]
    finals = _journal_outcomes(data)
    assert all(len(states) == 1 for states in finals.values()), finals
    assert len(finals) == N
    # balances: only confirmed withdrawals (amount + fee) left the account
    for asset in ("ETH", "BTC"):
        spent = sum(_units(w["amount"]) + _units(w["fee"]) for w in final
                    if w["asset"] == asset and w["state"] == "confirmed")
        assert start_balances[asset] - end_balances[asset] == spent


def _units(text: str) -> int:
    whole, _, frac = text.partition(".")
    return int(whole) * 10**8 + int(frac.ljust(8, "0"))


def _balances(server: Server) -> dict[str, int]:
    c = Client(server.url)
    try:
        r = c.get("/v1/balances")
        assert r.status_code == 200, r.text
        return {b["asset"]: _units(b["available"]) + _units(b.get("withdrawing", "0"))
                for b in r.json()}
    finally:
        c.close()


def _wait_final(client: Client, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        rows = client.get("/v1/withdrawals").json()
        if len(rows) >= N and all(w["state"] in ("confirmed", "failed") for w in rows):
            return rows
        if time.monotonic() > deadline:
            pending = [w for w in rows if w["state"] not in ("confirmed", "failed")]
            raise AssertionError(f"{len(pending)} withdrawals not final: {pending[:5]}")
        time.sleep(0.2)
