"""Withdrawals in a real cluster: one custody simulator for the cluster, the withdrawal worker
beside the leading engine node only, gateways with a custody client only. Withdrawals entered
through two gateways reach custody exactly once by the simulator's own ledger, across a leader
SIGKILL mid-stream and a leader frozen (SIGSTOP) past its lease while custody was down."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from bastion.custody.client import CustodyUnavailable
from bastion.withdrawals.runtime import FencedCustodyClient
from cluster_harness import DEMO_KEY, DEMO_SECRET, running
from custody_support import Sim
from serverproc import Client

GOOD = {"ETH": "0x" + "5a" * 20, "BTC": "bc1q" + "q" * 38}
ENV = {"BASTION_CUSTODY_BLOCK_MS": "100", "BASTION_CUSTODY_TIMEOUT": "0.5"}


def _withdraw(client: Client, n: int, asset: str, deadline_s: float = 30.0) -> dict[str, Any]:
    """One withdrawal, retried with the same client id through an election (idempotent)."""
    body = {"asset": asset, "amount": "0.01", "address": GOOD[asset], "client_id": f"wd-{n}"}
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            r = client.post("/v1/withdrawals", body)
            if r.status_code in (200, 201):
                return dict(r.json())
            assert r.status_code == 503, r.text  # an election: a clear transient error
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"withdrawal {n} not accepted"
        time.sleep(0.1)


def _states(client: Client) -> dict[str, str]:
    r = client.get("/v1/withdrawals", params={"limit": 500})
    assert r.status_code == 200, r.text
    return {w["id"]: w["state"] for w in r.json()}


def _wait_states(client: Client, wids: set[str], states: set[str], timeout: float = 60.0
                 ) -> None:
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        seen = _states(client)
        if all(seen.get(w) in states for w in wids):
            return
        time.sleep(0.2)
    raise AssertionError(f"not {states}: {[(w, seen.get(w)) for w in wids][:10]}")


def _ledger(url: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(url + "/v1/ledger", timeout=10).json()
    return body


def _sent_once(ledger: dict[str, Any], wids: set[str]) -> None:
    refs = [w["reference"] for w in ledger["withdrawals"]]
    assert ledger["double_sends"] == {}
    assert sorted(r for r in refs if r in wids) == sorted(wids), "not every withdrawal sent"


def test_one_worker_beside_the_leader_sends_each_withdrawal_once(tmp_path: Path) -> None:
    with running(tmp_path, nodes=2, gateways=2, env=ENV) as cluster:
        sim = cluster.custody_url
        assert sim, "the cluster started no custody simulator"
        gw = [Client(cluster.url(f"gateway-{i}"), DEMO_KEY, DEMO_SECRET, timeout=10)
              for i in (1, 2)]
        try:
            # gateways: a custody client (deposit addresses), no worker, no simulator
            addr = gw[1].get("/v1/deposit-address", params={"asset": "ETH"})
            assert addr.status_code == 200, addr.text
            assert addr.json()["address"] == gw[0].get(
                "/v1/deposit-address", params={"asset": "ETH"}).json()["address"]

            # 1. through both gateways: each reaches custody once, never replayed
            first = {_withdraw(gw[i % 2], i, "ETH" if i % 3 else "BTC")["id"]
                     for i in range(12)}
            _wait_states(gw[0], first, {"confirmed"})
            ledger = _ledger(sim)
            _sent_once(ledger, first)
            assert ledger["replays"] == 0, "a withdrawal was sent to custody twice"

            # 2. the leader SIGKILLed mid-stream: the successor's worker reconciles, sends
            #    the rest; nothing twice
            leader = cluster.wait_leader()
            second: set[str] = set()
            for i in range(12, 30):
                second.add(_withdraw(gw[i % 2], i, "ETH" if i % 3 else "BTC")["id"])
                if i == 18:
                    cluster.signal(leader, signal.SIGKILL)
            successor = cluster.wait_leader(not_=leader)
            _wait_states(gw[1], second, {"confirmed"})
            _sent_once(_ledger(sim), first | second)
            cluster.restart(leader)

            # 3. a leader frozen past its lease with withdrawals claimed while custody is
            #    down: the new leader sends them; the old one, thawed, sends nothing
            httpx.post(sim + "/faults", json={"mode": "down", "asset": "ETH"}, timeout=5)
            third = {_withdraw(gw[i % 2], i, "ETH")["id"] for i in range(30, 36)}
            deadline = time.monotonic() + 30  # the worker claimed some; custody has none
            while not any(_states(gw[0]).get(w) == "submitted" for w in third):
                assert time.monotonic() < deadline, _states(gw[0])
                time.sleep(0.1)
            cluster.signal(successor, signal.SIGSTOP)
            cluster.wait_leader(timeout=20, not_=successor)
            httpx.post(sim + "/faults", json={"mode": "ok", "asset": "ETH"}, timeout=5)
            _wait_states(gw[0], third, {"confirmed"})
            before = _ledger(sim)
            cluster.signal(successor, signal.SIGCONT)
            deadline = time.monotonic() + 20
            while (cluster.node_status(successor) or {}).get("role") not in ("standby",):
                assert time.monotonic() < deadline, cluster.logs(successor)
                time.sleep(0.1)
            time.sleep(1.0)
            after = _ledger(sim)
            _sent_once(after, first | second | third)
            assert after["replays"] == before["replays"], "the deposed leader sent again"
        finally:
            for c in gw:
                c.close()
        logs = {name: (tmp_path / f"{name}.log").read_text() for name in cluster.children}
        for name in ("gateway-1", "gateway-2"):  # gateways never start a worker or simulator
            assert "custody simulator" not in logs[name]
            assert "withdrawal worker" not in logs[name]
        assert "withdrawal worker stopped" in logs[successor]
        print("deposed leader's refused custody calls:",
              logs[successor].count("no longer leads"))


def test_fenced_custody_client_sends_nothing_once_the_lease_is_gone(tmp_path: Path) -> None:
    """The guard is asked before every call: with the lease gone, not one request reaches
    custody (the simulator's ledger stays empty)."""
    sim = Sim(tmp_path / "sim").start()
    lost: list[BaseException] = []

    async def go() -> None:
        client = FencedCustodyClient(sim.url, lambda: lost[0] if lost else None)
        try:
            await client.submit("k-1", "1", "ETH", GOOD["ETH"], 10**6)  # while leading: sent
            lost.append(RuntimeError("lease expired"))
            for call in (client.submit("k-2", "2", "ETH", GOOD["ETH"], 10**6),
                         client.submit("k-1", "1", "ETH", GOOD["ETH"], 10**6),
                         client.query("ETH", ["k-1"])):
                try:
                    await call
                except CustodyUnavailable as exc:
                    assert "no longer leads" in str(exc)
                else:
                    raise AssertionError("a fenced call went out")
            assert client.refused == 3
        finally:
            await client.close()

    try:
        asyncio.run(go())
        ledger = sim.ledger()
    finally:
        sim.stop()
    assert [w["key"] for w in ledger["withdrawals"]] == ["k-1"]
    assert ledger["replays"] == 0
