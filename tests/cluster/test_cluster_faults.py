"""NATS-side and gateway faults with real processes: the stream leader's server SIGKILLed, a
whole zone (its NATS server and its engine node) SIGKILLed, a gateway SIGKILLed and restarted
from a snapshot, and a NATS server whose JetStream store is full. Writes resume and nothing
acknowledged is lost."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

from bastion.cluster.natsproc import ZONES
from cluster_harness import DEMO_KEY, DEMO_SECRET, Load, check_stream, running, wait_hashes_agree


def test_stream_leader_kill(tmp_path: Path) -> None:
    """The NATS server leading the stream *and* the lease bucket is SIGKILLed (not the one the
    engine leader is connected to). The leader's lease lapses while NATS elects new leaders;
    it takes it back as soon as the bucket answers: no failover, no market in recovery."""
    from bastion.core import commands as C

    with running(tmp_path, nodes=2) as cluster:
        load = Load([cluster.url()]).start()
        try:
            load.wait_acks(30)
            leader = cluster.wait_leader()
            zone = next(z for z in ZONES if z not in cluster.client_zones(f"node-{leader}"))
            cluster.move_stream_leader(cluster.config().stream, zone)
            cluster.move_stream_leader(f"KV_{cluster.config().lease_bucket}", zone)
            killed_at = time.monotonic()
            cluster.kill_nats(zone)
            load.wait_acks(30, timeout=60)
            with load._lock:
                acks = [killed_at] + sorted(a for a in load.ack_times if a > killed_at)
            print(f"stream and lease leader nats-{zone} killed: longest gap between acks "
                  f"{max(b - a for a, b in zip(acks, acks[1:], strict=False)):.2f} s")
            assert cluster.stream_leader_zone() != zone
            assert cluster.wait_leader() == leader, "failed over instead of resuming"
            log = (tmp_path / f"{leader}.log").read_text()
            after = log.split("steps down", 1)[-1] if "steps down" in log else ""
            assert not after or "(resumed" in after, log[-3000:]
            cluster.restart_nats(zone)
            load.wait_acks(20, timeout=60)
        finally:
            load.stop()
        commands, replayed = check_stream(cluster, load)
        assert not [c for c in commands if isinstance(c, C.SetMarketMode)
                    and c.mode == "recovery"], "a resumed leader put markets in recovery"
        wait_hashes_agree(cluster, replayed, len(commands), timeout=60)


def test_zone_kill(tmp_path: Path) -> None:
    with running(tmp_path, nodes=2) as cluster:
        load = Load([cluster.url()]).start()
        try:
            load.wait_acks(30)
            leader = cluster.wait_leader()
            zone = cluster.children[leader].proc.zone
            killed_at = time.monotonic()
            cluster.signal(leader, signal.SIGKILL)
            cluster.kill_nats(zone)
            survivor = cluster.wait_leader(timeout=60, not_=leader)
            assert cluster.children[survivor].proc.zone != zone
            first = load.wait_acks(30, timeout=60)
            print(f"zone {zone} killed: writes resumed after {first - killed_at:.2f} s")
            cluster.restart_nats(zone)
            cluster.restart(leader)
            load.wait_acks(20, timeout=60)
        finally:
            load.stop()
        commands, replayed = check_stream(cluster, load)
        wait_hashes_agree(cluster, replayed, len(commands), timeout=60)


def test_gateway_kill_and_snapshot_catch_up(tmp_path: Path) -> None:
    from serverproc import Client

    with running(tmp_path, nodes=2, gateways=2) as cluster:
        load = Load([cluster.url("gateway-1")]).start()
        try:
            load.wait_acks(20)
            cluster.signal("gateway-2", signal.SIGKILL)
            errors_before = dict(load.errors)
            load.wait_acks(100, timeout=60)
            assert load.errors == errors_before, "gateway-1 clients saw errors"
            leader = cluster.wait_leader()
            log = tmp_path / f"{leader}.log"
            deadline = time.monotonic() + 30
            while "uploaded" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.2)
            load.wait_acks(20)
            cluster.restart("gateway-2")
            cluster.wait_gateway("gateway-2")
            text = (tmp_path / "gateway-2.log").read_text()
            loaded = re.findall(r"loaded snapshot at seq (\d+)", text)
            assert loaded and int(loaded[-1]) > 0, text[-2000:]
            # read-your-writes on the restarted gateway
            client = Client(cluster.url("gateway-2"), DEMO_KEY, DEMO_SECRET)
            for i in range(10):
                r = client.place(market="ETH-USDT", side="buy", price="1000",
                                 quantity="0.01", client_order_id=f"ryw{i}", post_only=True)
                assert r.status_code == 201, r.text
                got = client.get("/v1/orders", params={"market": "ETH-USDT"}).json()
                assert f"ryw{i}" in {o["client_order_id"] for o in got}
        finally:
            load.stop()
        commands, replayed = check_stream(cluster, load)
        wait_hashes_agree(cluster, replayed, len(commands), timeout=60)
        # A gateway starting from a snapshot of the stream's very end, with nothing being
        # written: it must know it is caught up (it used to wait for a message forever).
        leader = cluster.wait_leader()
        deadline = time.monotonic() + 60
        while max(map(int, re.findall(r"snapshot at seq (\d+) uploaded", (
                tmp_path / f"{leader}.log").read_text())), default=0) < len(commands):
            assert time.monotonic() < deadline, f"no snapshot at seq {len(commands)}"
            time.sleep(0.2)
        cluster.signal("gateway-2", signal.SIGKILL)
        cluster.restart("gateway-2")
        cluster.wait_gateway("gateway-2")
        text = (tmp_path / "gateway-2.log").read_text()
        assert int(re.findall(r"loaded snapshot at seq (\d+)", text)[-1]) >= len(commands)
        assert "stalled" not in text.split("loaded snapshot")[-1], text[-2000:]


def test_disk_full_on_a_nats_node_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """The JetStream store limit of zone c's server (``max_file_store``) is tiny, so that
    server runs out of storage while the stream grows; the other two keep the quorum."""
    with running(tmp_path, nodes=2, max_file_store={"c": "256KB"},
                 env={"BASTION_SNAPSHOT_S": "1"}) as cluster:
        load = Load([cluster.url()], threads=3).start()
        try:
            load.wait_acks(1500, timeout=240)
        finally:
            load.stop()
        text = (tmp_path / "nats-c.log").read_text(errors="replace")
        print("nats-c storage complaints:", len(re.findall(r"(?i)insufficient|resources|"
                                                             r"storage", text)))
        # Read from the healthy quorum only: nats-c, out of storage, can still answer stream
        # info and message reads from its own lagging copy (even to a client connected
        # elsewhere), so it is stopped first; what was acknowledged must be on a and b.
        cluster.kill_nats("c")
        commands, replayed = check_stream(cluster, load, zones="ab")
        leader = cluster.wait_leader(timeout=60)
        deadline = time.monotonic() + 60
        state = cluster.node_hash(leader)
        while not (state and state["seq"] == len(commands)) and time.monotonic() < deadline:
            time.sleep(0.2)
            state = cluster.node_hash(leader)
        assert state is not None and state["seq"] == len(commands), state
        assert state["hash"] == replayed
