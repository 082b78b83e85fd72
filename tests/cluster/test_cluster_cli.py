"""``bastion cluster up / status / switchover`` end to end, exactly as an operator runs them,
with the gateway's ``/metrics`` and a standby's divergence alarm barring it from promotion (by
a switchover, and after the leader dies: nobody leads, and ``status`` says why)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec

from bastion.cluster.childlife import child_setup
from bastion.cluster.natsproc import free_port
from bastion.cluster.supervisor import alive, bastion_cmd
from cluster_harness import DEMO_KEY, DEMO_SECRET, TEST_ENV


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(bastion_cmd(*args), capture_output=True, text=True, timeout=60,
                          env=env)


def _settled(data: Path, env: dict[str, str], want: list[str],
             timeout: float = 60.0) -> list[dict[str, Any]]:
    """``cluster status`` once the engine nodes' roles are ``want`` (a node reports
    ``starting`` while it reads the stream, and a loaded machine may take a while)."""
    deadline = time.monotonic() + timeout
    while True:
        procs: list[dict[str, Any]] = json.loads(
            _cli("cluster", "status", "--data", str(data), "--json", env=env).stdout)["processes"]
        roles = sorted(str(p["role"]) for p in procs if p["kind"] == "node")
        assert all(r in ("starting", "standby", "promoting", "leader", "resuming", "no-answer")
                   for r in roles), roles
        if roles == want:
            return procs
        assert time.monotonic() < deadline, f"roles {roles}, not {want}: {procs}"
        time.sleep(0.3)


def _check_gateway_metrics(url: str, timeout: float = 30.0) -> None:
    """The gateway's ``/metrics``: its role, its replica's seq and lag behind the leader
    (known once a leader heartbeat was heard)."""
    deadline = time.monotonic() + timeout
    while True:
        text = httpx.get(url, timeout=10).text
        lag = re.search(r"^bastion_replica_lag_commands (\S+)$", text, re.M)
        if lag is not None:
            break
        assert time.monotonic() < deadline, "no replica lag in /metrics:\n" + text[-3000:]
        time.sleep(0.3)
    assert 'bastion_node_role{role="gateway"} 1.0' in text, text[-3000:]
    seq = re.search(r"^bastion_node_seq (\S+)$", text, re.M)
    assert seq is not None and float(seq.group(1)) > 0
    assert 0 <= float(lag.group(1)) < 10_000


def _diverged(data: Path, env: dict[str, str], name: str) -> bool:
    procs = json.loads(_cli("cluster", "status", "--data", str(data), "--json",
                            env=env).stdout)["processes"]
    return bool(next(p for p in procs if p["name"] == name).get("diverged"))


def _forge_checkpoints(servers: list[str], place: Callable[[int], object],
                       done: Callable[[], bool], timeout: float = 60.0) -> None:
    """Write until the leader publishes a checkpoint hash, then publish a wrong hash for the
    same seq until ``done()``."""
    import nats

    from bastion.cluster.config import ClusterConfig
    from bastion.cluster.follower import Checkpoint

    subject = ClusterConfig(servers=()).checkpoint_subject

    async def go() -> None:
        nc = await nats.connect(servers)
        seen: list[Checkpoint] = []

        async def on(msg: Any) -> None:
            seen.append(msgspec.msgpack.decode(msg.data, type=Checkpoint))

        await nc.subscribe(subject, cb=on)
        deadline = time.monotonic() + timeout
        i = 0
        while not seen:
            assert time.monotonic() < deadline, "no checkpoint published"
            await asyncio.to_thread(place, i)
            i += 1
            await asyncio.sleep(0.1)
        real = seen[0]
        forged = msgspec.msgpack.encode(Checkpoint(real.seq, "0" * 64, real.term))
        while not await asyncio.to_thread(done):
            assert time.monotonic() < deadline, "the standby raised no divergence alarm"
            await nc.publish(subject, forged)
            await nc.flush()
            await asyncio.sleep(0.5)
        await nc.close()

    asyncio.run(go())


def test_cluster_up_status_switchover(tmp_path: Path) -> None:
    from serverproc import Client

    env = {**os.environ, **TEST_ENV}
    port = free_port()
    data = tmp_path / "cluster"
    up = subprocess.Popen(bastion_cmd("cluster", "up", "--data", str(data), "--port", str(port),
                                      "--nodes", "2", "--gateways", "1",
                                      "--nats-port", "0"),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          preexec_fn=child_setup())
    try:
        lines = [up.stdout.readline() for _ in range(7)] if up.stdout else []
        kinds = [line.split()[1] for line in lines]
        assert kinds == ["nats"] * 3 + ["custody-sim", "engine", "engine", "gateway"], lines
        client = Client(f"http://127.0.0.1:{port}", DEMO_KEY, DEMO_SECRET)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                r = client.place(market="BTC-USDT", side="buy", price="30000",
                                 quantity="0.001", client_order_id="before")
                if r.status_code == 201:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError("gateway never acknowledged an order")

        procs = _settled(data, env, ["leader", "standby"])
        _check_gateway_metrics(f"http://127.0.0.1:{port}/metrics")
        assert {p["kind"] for p in procs} == {"nats", "custody", "node", "gateway"}
        assert sorted(p["zone"] for p in procs if p["kind"] == "nats") == ["a", "b", "c"]
        assert all(set(p) >= {"name", "kind", "zone", "pid", "port", "role", "seq"}
                   for p in procs)
        assert sum(p["role"] == "stream-leader" for p in procs) == 1
        leader = next(p for p in procs if p["role"] == "leader")

        done = _cli("cluster", "switchover", "--data", str(data), "--json", env=env)
        result = json.loads(done.stdout)
        assert result["ok"] and result["from"] == leader["name"], done.stdout + done.stderr
        assert result["pause_ms"] < 5000
        r = client.place(market="BTC-USDT", side="buy", price="30000", quantity="0.001",
                         client_order_id="after")
        assert r.status_code == 201, r.text
        r = client.get("/v1/orders", params={"market": "BTC-USDT"})
        assert {o["client_order_id"] for o in r.json()} >= {"before", "after"}
        now_leader = next(p for p in _settled(data, env, ["leader", "standby"])
                          if p["role"] == "leader")
        assert now_leader["name"] == result["to"] != leader["name"]
        # a planned handover is no lapse: the old leader does not try to take the lease back
        # (it said "resuming", after a moment of still saying "leader")
        old_log = (data / f"{leader['name']}.log").read_text()
        assert "will try to take it back" not in old_log, old_log[-2000:]
        pids = [p["pid"] for p in procs]

        # The divergence alarm: a leader hash at a checkpoint that disagrees with the
        # standby's own (forged on the real checkpoint subject) bars it from promotion.
        servers = json.loads((data / "cluster.json").read_text())["servers"]
        _forge_checkpoints(servers, lambda i: client.place(
            market="BTC-USDT", side="buy", price="30000", quantity="0.001",
            client_order_id=f"cp{i}"), lambda: _diverged(data, env, leader["name"]))
        done = _cli("cluster", "switchover", "--data", str(data), env=env)
        assert done.returncode == 2 and "NO_STANDBY" in done.stderr, done.stdout + done.stderr

        # The leader dies while the only standby is barred: nobody is promoted, and
        # `status` says why (a barred node taking over would serve a state nobody wrote).
        os.kill(now_leader["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while True:
            st = json.loads(_cli("cluster", "status", "--data", str(data), "--json",
                                 env=env).stdout)
            if any(p.startswith("NO_LEADER: no node leads and none can be promoted")
                   for p in st["problems"]):
                break
            assert time.monotonic() < deadline, st
            time.sleep(0.5)
        time.sleep(3.0)  # three lease TTLs later, still nobody leads
        human = _cli("cluster", "status", "--data", str(data), env=env).stdout
        assert "ALARM NO_LEADER" in human and "DIVERGED (barred)" in human, human
        barred = next(p for p in json.loads(_cli("cluster", "status", "--data", str(data),
                                                 "--json", env=env).stdout)["processes"]
                      if p["name"] == leader["name"])
        assert barred["role"] == "standby" and barred["diverged"], barred
        assert "barred from promotion" in (data / f"{leader['name']}.log").read_text()
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(60)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.1)
    assert not [pid for pid in pids if alive(pid)]


def test_status_without_cluster_is_a_clear_error(tmp_path: Path) -> None:
    done = _cli("cluster", "status", "--data", str(tmp_path), env=dict(os.environ))
    assert done.returncode == 2
    assert "NO_CLUSTER" in done.stderr and "Traceback" not in done.stderr
