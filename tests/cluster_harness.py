"""A real cluster in child processes for the cluster tests, bench and drill: 3 nats-server
processes (zones a/b/c), engine nodes and gateways, each killable with real signals, plus a
load generator that records every acknowledged order and a checker that verifies them against
the stream.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec

from bastion.cluster.childlife import bind_children
from bastion.cluster.config import ClusterConfig
from bastion.cluster.natsproc import ZONES, NatsServer, cluster_specs, free_port, start_cluster
from bastion.cluster.supervisor import (
    ClusterState,
    Proc,
    custody_wanted,
    gateway_args,
    node_args,
    shared_secrets,
    spawn,
    start_custody,
)
from bastion.core import commands as C
from bastion.core.codec import decode_command
from bastion.core.engine import Engine
from bastion.journal.jetstream import JetStreamJournal
from bastion.journal.natsloop import NatsLoop

#: a killed test run (SIGKILL, a CI timeout) takes its NATS servers, nodes and gateways along
bind_children()

DEMO_KEY = "demo-key-0001"
DEMO_SECRET = "demo-secret-0001"
ADMIN = "test-admin-token"

#: short lease and recovery windows so failovers take seconds in tests
TEST_ENV = {
    "BASTION_LEASE_TTL": "1.0",
    "BASTION_RECOVERY_MS": "2000",
    "BASTION_CHECKPOINT_S": "0.5",
    "BASTION_SNAPSHOT_S": "3",
    "BASTION_ELECTION_WAIT": "15",
    "BASTION_DEMO_KEY": DEMO_KEY,
    "BASTION_DEMO_SECRET": DEMO_SECRET,
    "BASTION_ADMIN_TOKEN": ADMIN,
    "BASTION_HEALTH_INTERVAL": "5",
    "BASTION_FEEDER_INTERVAL": "0",
    "BASTION_RATE_KEY": "0",
    "BASTION_RATE_IP": "0",
}


@dataclass
class Child:
    proc: Proc
    popen: subprocess.Popen[bytes] | None
    args: list[str]
    log: Path


class Cluster:
    def __init__(self, root: Path, nodes: int = 2, gateways: int = 1,
                 env: dict[str, str] | None = None, max_file_store: dict[str, str] | None = None
                 ) -> None:
        self.root = root
        self.n_nodes = nodes
        self.n_gateways = gateways
        self.env = {**os.environ, **TEST_ENV, **(env or {})}
        self.max_file_store = max_file_store or {}
        self.nats: dict[str, NatsServer] = {}
        self.children: dict[str, Child] = {}
        self.servers: list[str] = []
        self.custody_url = ""

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> Cluster:
        self.root.mkdir(parents=True, exist_ok=True)
        specs = cluster_specs(self.root)
        for spec in specs:
            spec.max_file_store = self.max_file_store.get(spec.zone, "")
        for server in start_cluster(specs):
            self.nats[server.spec.zone] = server
        self.servers = [s.url for s in specs]
        shared_secrets(self.root, self.env)  # as `cluster up`: the same on every gateway
        if custody_wanted(self.env):  # one simulator for the cluster, as `cluster up` does
            proc, popen, url = start_custody(self.root, self.env)
            self.env["BASTION_CUSTODY_URL"] = self.custody_url = url
            self.children[proc.name] = Child(proc, popen, [], self.root / "custody.log")
        for i in range(self.n_nodes):
            zone = ZONES[i % len(ZONES)]
            self.add_node(f"node-{i + 1}{zone}", zone)
        for i in range(self.n_gateways):
            self.add_gateway(f"gateway-{i + 1}", ZONES[i % len(ZONES)])
        self.save()
        for name in self.children:
            if name.startswith("gateway"):
                self.wait_gateway(name)
        self.wait_leader()
        return self

    def add_node(self, name: str, zone: str) -> None:
        args = node_args(self.servers, name, zone, self.root / name, "main")
        self._spawn(Proc(name, "node", zone, 0, 0), args)

    def add_gateway(self, name: str, zone: str) -> None:
        port = free_port()
        args = gateway_args(self.servers, name, port, self.root / name, "main")
        self._spawn(Proc(name, "gateway", zone, 0, port), args)

    def _spawn(self, proc: Proc, args: list[str]) -> None:
        log = self.root / f"{proc.name}.log"
        popen = spawn(args, log, self.env)
        proc.pid = popen.pid
        self.children[proc.name] = Child(proc, popen, args, log)

    def restart(self, name: str) -> None:
        child = self.children[name]
        if child.popen is not None and child.popen.poll() is None:
            raise RuntimeError(f"{name} still running")
        child.popen = spawn(child.args, child.log, self.env)
        child.proc.pid = child.popen.pid
        self.save()

    def save(self) -> None:
        state = ClusterState(self.servers, "main", float(self.env["BASTION_LEASE_TTL"]))
        for server in self.nats.values():
            state.processes.append(Proc(server.spec.name, "nats", server.spec.zone,
                                        server.pid or 0, server.spec.port))
        state.processes += [c.proc for c in self.children.values()]
        state.save(self.root)

    def stop(self) -> None:
        for child in self.children.values():
            p = child.popen
            if p is not None and p.poll() is None:
                with _suppress():
                    os.kill(p.pid, signal.SIGCONT)
                p.send_signal(signal.SIGTERM)
        for child in self.children.values():
            p = child.popen
            if p is not None:
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for server in self.nats.values():
            server.signal(signal.SIGCONT)
            server.stop()

    # --- signals ---------------------------------------------------------------------------

    def signal(self, name: str, sig: int) -> None:
        """Send ``sig`` to a node or gateway; returns once a SIGKILLed one is gone and a
        SIGSTOPped one is frozen (``freeze``)."""
        popen = self.children[name].popen
        assert popen is not None
        if sig == signal.SIGSTOP:
            freeze(popen.pid)
            return
        os.kill(popen.pid, sig)
        if sig == signal.SIGKILL:
            popen.wait()

    def freeze_nats(self, zones: str) -> None:
        """SIGSTOP the NATS servers of ``zones``; returns once every one is frozen."""
        for zone in zones:
            pid = self.nats[zone].pid
            assert pid is not None
            freeze(pid)

    def thaw_nats(self, zones: str) -> None:
        for zone in zones:
            self.nats[zone].signal(signal.SIGCONT)

    def kill_nats(self, zone: str) -> None:
        self.nats[zone].kill()

    def restart_nats(self, zone: str, timeout: float = 30.0) -> None:
        """Start a killed server again on its ports (a port may be held for a moment by a
        closing connection or another test's probe)."""
        from bastion.cluster.natsproc import PortTaken

        server = self.nats[zone]
        deadline = time.monotonic() + timeout
        while True:
            try:
                server.start()
                break
            except PortTaken:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        server.wait_listening()

    def url(self, gateway: str = "gateway-1") -> str:
        return f"http://127.0.0.1:{self.children[gateway].proc.port}"

    def config(self) -> ClusterConfig:
        return ClusterConfig(servers=tuple(self.servers))

    # --- observation -----------------------------------------------------------------------

    def ask(self, subject: str, timeout: float = 2.0, data: bytes = b"") -> Any:
        async def go() -> Any:
            import nats

            nc = await nats.connect(self.servers, connect_timeout=2, allow_reconnect=False)
            try:
                msg = await nc.request(subject, data, timeout=timeout)
                return msgspec.json.decode(msg.data)
            finally:
                await nc.close()

        try:
            return asyncio.run(go())
        except Exception:
            return None

    def node_status(self, name: str) -> dict[str, Any] | None:
        answer: dict[str, Any] | None = self.ask(self.config().node_subject(name, "status"))
        return answer

    def node_hash(self, name: str) -> dict[str, Any] | None:
        answer: dict[str, Any] | None = self.ask(self.config().node_subject(name, "hash"), 10)
        return answer

    def leader(self) -> str | None:
        for name, child in self.children.items():
            if child.proc.kind != "node" or child.popen is None or child.popen.poll() is not None:
                continue
            st = self.node_status(name)
            if st and st["role"] == "leader":
                return name
        return None

    def wait_leader(self, timeout: float = 60.0, not_: str | None = None) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = self.leader()
            if leader is not None and leader != not_:
                return leader
            time.sleep(0.1)
        raise AssertionError(f"no leader within {timeout} s\n" + self.logs())

    def wait_gateway(self, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        url = self.url(name)
        popen = self.children[name].popen
        while time.monotonic() < deadline:
            if popen is not None and popen.poll() is not None:
                raise AssertionError(f"{name} exited\n" + self.logs(name))
            try:
                if httpx.get(url + "/v1/markets", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{name} not serving\n" + self.logs(name))

    def stream_leader_zone(self, stream: str = "") -> str:
        """Zone of the server leading ``stream`` (default: the shard's log)."""
        async def go() -> str:
            loop = NatsLoop(self.servers, connect_wait=5)
            try:
                info = await loop.call(loop.js.stream_info(stream or self.config().stream))
                return str(info.cluster.leader if info.cluster else "")
            finally:
                await asyncio.to_thread(loop.close)

        return asyncio.run(go()).removeprefix("nats-")

    def move_stream_leader(self, stream: str, zone: str, timeout: float = 60.0) -> None:
        """Ask ``stream``'s leader to step down in favour of zone ``zone``'s server."""
        body = msgspec.json.encode({"placement": {"preferred": f"nats-{zone}"}})
        deadline = time.monotonic() + timeout
        while self.stream_leader_zone(stream) != zone:
            assert time.monotonic() < deadline, f"{stream} not led from zone {zone}"
            self.ask(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", timeout=5.0, data=body)
            time.sleep(0.5)

    def client_zones(self, client: str) -> set[str]:
        """Zones of the servers a client named ``client`` is connected to (``/connz``)."""
        zones = set()
        for zone, server in self.nats.items():
            url = f"http://127.0.0.1:{server.spec.http_port}/connz?limit=1000"
            try:
                conns = httpx.get(url, timeout=2).json().get("connections") or []
            except (httpx.HTTPError, ValueError):
                continue
            if any(c.get("name") == client for c in conns):
                zones.add(zone)
        return zones

    def read_stream(self, zones: str = "abc") -> list[C.Command]:
        """The whole stream, read through the servers of ``zones`` only (a server whose store
        is full answers from its own lagging copy)."""
        loop = NatsLoop([self.nats[z].spec.url for z in zones], connect_wait=10)
        try:
            journal = JetStreamJournal(loop, self.config().stream, self.config().log_subject)
            return [decode_command(p) for _, p in journal.read(1)]
        finally:
            loop.close()

    def logs(self, *names: str) -> str:
        out = []
        for name in names or tuple(self.children):
            path = self.root / f"{name}.log"
            if path.exists():
                out.append(f"--- {name}\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(out)


@contextmanager
def running(root: Path, **kw: Any) -> Iterator[Cluster]:
    cluster = Cluster(root, **kw)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def freeze(pid: int, timeout: float = 10.0) -> None:
    """SIGSTOP ``pid`` and wait until every one of its threads is stopped. ``kill`` returns
    before that: the kernel wakes one thread to take the signal and only then stops the
    others, and meanwhile they run on (a NATS server then still acks a replica write: a test
    of "no quorum" saw its write succeed)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while not _all_stopped(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} not stopped {timeout} s after SIGSTOP")
        time.sleep(0.001)


def _all_stopped(pid: int) -> bool:
    tasks = Path(f"/proc/{pid}/task")
    for task in tasks.iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:
            continue  # the thread ended
        if stat[stat.rindex(")") + 2] not in "TtZX":  # stopped, or ended
            return False
    return True


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


# --- load and checking ---------------------------------------------------------------------


@dataclass
class Load:
    """Client threads placing resting orders with unique client ids; each records the ids
    the gateway acknowledged (HTTP 201), in order, and the outcome of everything else."""

    urls: list[str]
    threads: int = 2
    acked: list[list[str]] = field(default_factory=list)
    errors: dict[int, int] = field(default_factory=dict)
    other: list[str] = field(default_factory=list)
    ack_times: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        import sys

        sys.path.insert(0, str(Path(__file__).parent))
        for t in range(self.threads):
            self.acked.append([])
            thread = threading.Thread(target=self._run, args=(t,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _run(self, t: int) -> None:
        from serverproc import Client

        client = Client(self.urls[t % len(self.urls)], DEMO_KEY, DEMO_SECRET, timeout=30)
        i = 0
        while not self._stop.is_set():
            cid = f"c{t}x{i}"
            i += 1
            side = "buy" if i % 2 else "sell"
            price = "30000" if side == "buy" else "90000"
            try:
                r = client.place(market="BTC-USDT", side=side, price=price, quantity="0.001", post_only=True,
                                 client_order_id=cid)
            except httpx.HTTPError as exc:
                with self._lock:
                    self.other.append(f"{cid}: {exc!r}")
                time.sleep(0.05)
                continue
            with self._lock:
                if r.status_code == 201:
                    self.acked[t].append(cid)
                    self.ack_times.append(time.monotonic())
                else:
                    self.errors[r.status_code] = self.errors.get(r.status_code, 0) + 1
                    if r.status_code != 503 or "retry-after" not in r.headers:
                        self.other.append(f"{cid}: {r.status_code} {r.text[:200]}")
            if r.status_code != 201:
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def count(self) -> int:
        return sum(len(a) for a in self.acked)

    def wait_acks(self, more: int, timeout: float = 30.0) -> float:
        """Block until ``more`` further acks arrive; returns when the first one did."""
        start = self.count()
        first = 0.0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            n = self.count()
            if n > start and not first:
                first = time.monotonic()
            if n >= start + more:
                return first
            time.sleep(0.01)
        raise AssertionError(f"only {self.count() - start} of {more} acks in {timeout} s "
                             f"(errors {self.errors}, other {self.other[-3:]})")

    def first_ack_after(self, t: float) -> float | None:
        with self._lock:
            later = [a for a in self.ack_times if a > t]
        return min(later) if later else None


def check_stream(cluster: Cluster, load: Load | None, zones: str = "abc"
                 ) -> tuple[list[C.Command], str]:
    """Every acknowledged order is in the stream exactly once and in each client's ack order;
    a clean replay of the whole stream gives the state hash returned."""
    commands = cluster.read_stream(zones)
    for i, cmd in enumerate(commands):
        assert cmd.seq == i + 1, f"record {i + 1} is stamped seq {cmd.seq}"
    engine = Engine()
    for cmd in commands:
        engine.apply(cmd)
    if load is not None:
        position: dict[str, int] = {}
        for cmd in commands:
            if isinstance(cmd, C.PlaceOrder) and cmd.client_id:
                assert cmd.client_id not in position, f"{cmd.client_id} journaled twice"
                position[cmd.client_id] = cmd.seq
        for acked in load.acked:
            missing = [cid for cid in acked if cid not in position]
            assert not missing, f"{len(missing)} acknowledged orders lost: {missing[:5]}"
            seqs = [position[cid] for cid in acked]
            assert seqs == sorted(seqs), "acknowledged orders out of order in the stream"
    return commands, engine.state_hash()


def wait_hashes_agree(cluster: Cluster, expected_hash: str, seq: int,
                      timeout: float = 30.0) -> dict[str, str]:
    """Every live node reaches ``seq`` with exactly the replayed state hash."""
    deadline = time.monotonic() + timeout
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        seen = {}
        for name, child in cluster.children.items():
            if child.proc.kind != "node" or child.popen is None or child.popen.poll() is not None:
                continue
            seen[name] = cluster.node_hash(name)
        if seen and all(v and v["seq"] == seq for v in seen.values()):
            hashes = {k: v["hash"] for k, v in seen.items()}
            assert set(hashes.values()) == {expected_hash}, f"hash mismatch: {hashes}"
            return hashes
        time.sleep(0.2)
    raise AssertionError(f"nodes did not reach seq {seq}: {seen}")
