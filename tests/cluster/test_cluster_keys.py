"""API keys shared by every gateway (the shard's KV bucket): a key created on one gateway
trades on another (REST and WebSocket); a revoke on one closes the key's WebSocket on the
other and its REST calls get 401; a permission change applies everywhere; a gateway started
later, or restarted with an empty data directory, knows every key; a change the bucket cannot
take (no NATS quorum) is a clear 503 and leaves no key behind, and the gateways' watches outlive
it; with the engine down, keys and the status page still answer."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec

from bastion.journal.jetstream import retry_transient
from bastion.journal.natsloop import NatsLoop
from cluster_harness import ADMIN, Cluster, running
from hostile_support import RawWs, reply, ws_auth
from serverproc import Admin, Client

ORDER = {"market": "BTC-USDT", "side": "buy", "quantity": "0.001", "price": "9000"}


def _wait_status(call: Any, want: int, timeout: float = 10.0) -> httpx.Response:
    """The first response with status ``want`` (another gateway applies a change within
    milliseconds; the margin is for a loaded machine)."""
    deadline = time.monotonic() + timeout
    while True:
        r: httpx.Response = call()
        if r.status_code == want or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def _ws(cluster: Cluster, gateway: str, key: str, secret: str) -> RawWs:
    ws = RawWs("127.0.0.1", cluster.children[gateway].proc.port)
    assert ws_auth(ws, key, secret)["ok"]
    ws.send_json({"op": "subscribe", "id": 2, "channels": ["orders"]})
    assert reply(ws, 2)["ok"]
    return ws


def _bucket_accounts(cluster: Cluster) -> list[int]:
    """The accounts of every key record in the shared bucket (read directly from NATS)."""
    async def go(nats: NatsLoop) -> list[int]:
        kv = await retry_transient(lambda: nats.js.key_value(cluster.config().keys_bucket),
                                   "key bucket")
        accounts = []
        watcher = await retry_transient(lambda: kv.watchall(), "key bucket")  # just thawed
        while (entry := await watcher.updates(timeout=5)) is not None:
            if entry.value and entry.key != "server.check":
                accounts.append(int(msgspec.json.decode(entry.value)["account"]))
        await watcher.stop()
        return accounts

    nats = NatsLoop(cluster.servers, name="test-keys")
    try:
        return nats.run(go(nats))
    finally:
        nats.close()


def test_keys_are_shared_by_every_gateway(tmp_path: Path) -> None:
    with running(tmp_path, nodes=1, gateways=2) as cluster:
        admin1 = Admin(cluster.url("gateway-1"), ADMIN)
        admin2 = Admin(cluster.url("gateway-2"), ADMIN)
        ws1 = ws2 = None
        try:
            # created on gateway 1, trades on gateway 2 (REST and WebSocket)
            on1 = admin1.new_account(601)
            assert on1.key and on1.secret
            on2 = Client(cluster.url("gateway-2"), on1.key, on1.secret, timeout=10)
            r = _wait_status(lambda: on2.place(**ORDER, client_order_id="k-1"), 201)
            assert r.status_code == 201, r.text
            assert on1.place(**ORDER, client_order_id="k-2").status_code == 201
            ws2 = _ws(cluster, "gateway-2", on1.key, on1.secret)
            ws2.send_json({"op": "place", "id": 3, "args": {**ORDER, "client_order_id": "k-3"}})
            assert reply(ws2, 3)["ok"], "the WebSocket on gateway 2 refused the key"

            # revoked on gateway 2: gateway 1's WebSocket closes, its REST says 401
            ws1 = _ws(cluster, "gateway-1", on1.key, on1.secret)
            assert admin2.http.delete(f"/admin/keys/{on1.key}").status_code == 204
            assert ws1.wait_close(timeout=10) == (1008, "API key revoked")
            assert ws2.wait_close(timeout=10) == (1008, "API key revoked")
            r = _wait_status(lambda: on1.get("/v1/orders/open"), 401)
            assert r.status_code == 401, r.text
            assert admin1.http.delete(f"/admin/keys/{on1.key}").status_code == 404

            # a permission change on gateway 1 applies on gateway 2
            k2 = admin2.new_account(602)
            assert k2.key and k2.secret
            k2_on1 = Client(cluster.url("gateway-1"), k2.key, k2.secret, timeout=10)
            assert _wait_status(lambda: k2_on1.get("/v1/orders/open"), 200).status_code == 200
            r = admin1.http.patch(f"/admin/keys/{k2.key}", json={"permissions": ["read"]})
            assert r.status_code == 200, r.text
            r = _wait_status(lambda: k2.place(**ORDER, client_order_id="k-4"), 403)
            assert r.json()["code"] == "FORBIDDEN", r.text

            # a gateway started after the keys were made knows them (and the revoke)
            cluster.add_gateway("gateway-3", "c")
            cluster.save()
            cluster.wait_gateway("gateway-3")
            k2_on3 = Client(cluster.url("gateway-3"), k2.key, k2.secret, timeout=10)
            assert k2_on3.get("/v1/orders/open").status_code == 200
            assert k2_on3.place(**ORDER, client_order_id="k-5").status_code == 403
            gone = Client(cluster.url("gateway-3"), on1.key, on1.secret, timeout=10)
            assert gone.get("/v1/orders/open").status_code == 401

            # gateway 1 killed and restarted with an empty data directory: keys still there
            cluster.signal("gateway-1", signal.SIGKILL)
            shutil.rmtree(tmp_path / "gateway-1")
            cluster.restart("gateway-1")
            cluster.wait_gateway("gateway-1")
            assert k2_on1.get("/v1/orders/open").status_code == 200
            assert not (tmp_path / "gateway-1" / "api" / "keys.json").exists()

            # no quorum for the bucket: a clear 503, and no key left behind
            cluster.freeze_nats("bc")
            try:
                r = admin1.post("/admin/keys", {"account": 777, "permissions": ["read"]})
            finally:
                cluster.thaw_nats("bc")
            assert r.status_code == 503, r.text
            assert r.json()["code"] == "UNAVAILABLE" and r.headers["retry-after"], r.text
            assert "no key was created" in r.json()["message"]
            # it may have been stored once the quorum came back: then it is removed again;
            # a read just after the thaw may see no records yet (602's is there all along)
            deadline = time.monotonic() + 20
            while (777 in (accounts := _bucket_accounts(cluster))) or 602 not in accounts:
                assert time.monotonic() < deadline, accounts
                time.sleep(0.5)

            # every gateway's watch outlived the frozen servers: a key made now is known
            r = _wait_status(lambda: admin2.post("/admin/keys", {"account": 603,
                                                                 "permissions": ["read"]}),
                             201, timeout=30)
            assert r.status_code == 201, r.text
            k3 = Client(cluster.url("gateway-1"), r.json()["key"], r.json()["secret"])
            assert _wait_status(lambda: k3.get("/v1/orders/open"), 200).status_code == 200

            # the engine's only node down: keys and the status page still answer
            cluster.signal("node-1a", signal.SIGKILL)
            assert k3.get("/v1/orders/open").status_code == 200
            for gw in ("gateway-1", "gateway-2"):
                for path in ("/api/v2/summary.json", "/status"):
                    assert httpx.get(cluster.url(gw) + path, timeout=10).status_code == 200
        finally:
            for ws in (ws1, ws2):
                if ws is not None:
                    ws.close()
            admin1.close()
            admin2.close()


def test_a_gateway_with_another_server_key_refuses_to_start(tmp_path: Path) -> None:
    """Its secrets would not decrypt: it says so and stops, instead of refusing every key."""
    with running(tmp_path, nodes=1, gateways=1) as cluster:
        cluster.env = {**cluster.env, "BASTION_SERVER_KEY": "ab" * 32}
        cluster.add_gateway("gateway-2", "b")
        popen = cluster.children["gateway-2"].popen
        assert popen is not None
        assert popen.wait(60) != 0
        log = cluster.logs("gateway-2")
        assert "SERVER_KEY_MISMATCH" in log and "BASTION_SERVER_KEY" in log, log

