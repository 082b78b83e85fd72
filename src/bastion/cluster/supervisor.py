"""``bastion cluster up``: a whole cluster on one machine (3 NATS servers in zones a/b/c, the
engine nodes spread over the zones, the gateways, and one custody simulator shared by all of
them unless ``BASTION_CUSTODY_URL`` names a real custody service), recorded in
``<data>/cluster.json`` so ``status``, ``switchover``, tests and drills can find every
process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bastion.api.security.keys import server_key_file
from bastion.cluster.childlife import child_setup
from bastion.cluster.config import ClusterConfig
from bastion.cluster.natsproc import ZONES, NatsServer, cluster_specs, free_port, start_cluster
from bastion.journal.errors import DurabilityError

STATE_FILE = "cluster.json"


@dataclass
class Proc:
    name: str
    kind: str  # nats | node | gateway | custody
    zone: str
    pid: int
    port: int


@dataclass
class ClusterState:
    servers: list[str]
    shard: str
    lease_ttl: float
    processes: list[Proc] = field(default_factory=list)

    def save(self, data: Path) -> None:
        tmp = data / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        os.replace(tmp, data / STATE_FILE)

    @classmethod
    def load(cls, data: Path) -> ClusterState:
        path = data / STATE_FILE
        if not path.exists():
            raise DurabilityError(f"no cluster at {data} ({STATE_FILE} missing): start one "
                                  "with `bastion cluster up --data DIR`", code="NO_CLUSTER")
        raw = json.loads(path.read_text())
        procs = [Proc(**p) for p in raw.pop("processes")]
        return cls(**raw, processes=procs)

    def config(self) -> ClusterConfig:
        return ClusterConfig(servers=tuple(self.servers), shard=self.shard,
                             lease_ttl=self.lease_ttl)


def bastion_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "from bastion.cli.main import app; app()", *args]


def node_args(servers: list[str], name: str, zone: str, data: Path, shard: str,
              extra: tuple[str, ...] = ()) -> list[str]:
    return bastion_cmd("node", "--servers", ",".join(servers), "--name", name, "--zone", zone,
                       "--data", str(data), "--shard", shard, *extra)


def gateway_args(servers: list[str], name: str, port: int, data: Path, shard: str) -> list[str]:
    return bastion_cmd("gateway", "--servers", ",".join(servers), "--name", name,
                       "--port", str(port), "--data", str(data), "--shard", shard)


def custody_wanted(env: dict[str, str]) -> bool:
    """A cluster starts its own custody simulator unless withdrawals are off or the
    environment names a real custody service."""
    return (env.get("BASTION_WITHDRAWALS", "1") not in ("0", "false", "no", "off")
            and not env.get("BASTION_CUSTODY_URL"))


def start_custody(data: Path, env: dict[str, str], timeout: float = 30.0
                  ) -> tuple[Proc, subprocess.Popen[bytes], str]:
    """The cluster's one custody simulator (``bastion custody-sim``, which restarts itself
    after a simulated crash), up and answering: the leader's withdrawal worker and every
    gateway's custody client use its URL."""
    import httpx

    port = int(env.get("BASTION_CUSTODY_PORT") or 0) or free_port()
    args = bastion_cmd("custody-sim", "--port", str(port), "--data", str(data / "custody-sim"),
                       "--block-ms", env.get("BASTION_CUSTODY_BLOCK_MS", "1000"))
    popen = spawn(args, data / "custody.log", env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if popen.poll() is not None or time.monotonic() > deadline:
            popen.kill()
            raise DurabilityError(f"the custody simulator did not start on port {port} (log: "
                                  f"{data / 'custody.log'})", code="CUSTODY_START")
        time.sleep(0.1)
    return Proc("custody", "custody", "-", popen.pid, port), popen, url


def shared_secrets(data: Path, env: dict[str, str]) -> None:
    """What every gateway must share, made once per cluster directory (0600 files) unless the
    environment gives it: the server key the shared API keys' secrets are encrypted under, and
    the operator token (behind a load balancer any gateway may get an operator's call)."""
    if not env.get("BASTION_SERVER_KEY"):
        env["BASTION_SERVER_KEY"] = server_key_file(data / "server.key").hex()
    if not env.get("BASTION_ADMIN_TOKEN"):
        env["BASTION_ADMIN_TOKEN"] = server_key_file(data / "admin.token").hex()


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115 - the child owns it
    try:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True, preexec_fn=child_setup())
    finally:
        out.close()


class Supervisor:
    """Starts everything, prints one line per process, stops everything on SIGTERM/Ctrl-C."""

    def __init__(self, data: Path, *, port: int = 8080, nodes: int = 2, gateways: int = 1,
                 nats_port: int | None = 4222, shard: str = "main",
                 node_extra: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
        """``nats_port=None``: free ports (drills, tests); ``env``: the children's environment
        (default: this process's)."""
        self.data = data
        self.port = port
        self.nodes = nodes
        self.gateways = gateways
        self.nats_port = nats_port
        self.shard = shard
        self.node_extra = node_extra
        self.env = dict(env if env is not None else os.environ)
        self.nats: list[NatsServer] = []
        self.children: list[tuple[Proc, subprocess.Popen[bytes]]] = []
        self._args: dict[str, tuple[list[str], dict[str, str]]] = {}

    def start(self) -> ClusterState:
        self.data.mkdir(parents=True, exist_ok=True)
        specs = cluster_specs(self.data, self.nats_port)
        self.nats = start_cluster(specs)
        servers = [s.url for s in specs]
        state = ClusterState(servers, self.shard, ClusterConfig(servers=()).lease_ttl)
        for server in self.nats:
            state.processes.append(Proc(server.spec.name, "nats", server.spec.zone,
                                        server.pid or 0, server.spec.port))
        shared_secrets(self.data, self.env)
        if custody_wanted(self.env):
            proc, popen, url = start_custody(self.data, self.env)
            self.env["BASTION_CUSTODY_URL"] = url
            state.processes.append(proc)
            self.children.append((proc, popen))
        for i in range(self.nodes):
            zone = ZONES[i % len(ZONES)]
            name = f"node-{i + 1}{zone}"
            args = node_args(servers, name, zone, self.data / name, self.shard, self.node_extra)
            self._add(state, Proc(name, "node", zone, 0, 0), args, self.env)
        for i in range(self.gateways):
            name = f"gateway-{i + 1}"
            port = self.port + i
            env = dict(self.env)
            if i > 0:  # one demo price feeder per cluster is enough
                env["BASTION_FEEDER_INTERVAL"] = "0"
            args = gateway_args(servers, name, port, self.data / name, self.shard)
            self._add(state, Proc(name, "gateway", ZONES[i % len(ZONES)], 0, port), args, env)
        self.state = state
        state.save(self.data)
        return state

    def _add(self, state: ClusterState, proc: Proc, args: list[str],
             env: dict[str, str]) -> None:
        popen = spawn(args, self.data / f"{proc.name}.log", env)
        proc.pid = popen.pid
        self._args[proc.name] = (args, env)
        state.processes.append(proc)
        self.children.append((proc, popen))

    def popen(self, name: str) -> subprocess.Popen[bytes]:
        return next(c for p, c in self.children if p.name == name)

    def kill(self, name: str) -> None:
        """SIGKILL one node or gateway (or a NATS server by its name, ``nats-<zone>``)."""
        for server in self.nats:
            if server.spec.name == name:
                server.kill()
                return
        child = self.popen(name)
        if child.poll() is None:
            child.kill()
            child.wait()

    def restart(self, name: str) -> None:
        """Start a killed process again with the same arguments (and data)."""
        for server in self.nats:
            if server.spec.name == name:
                server.start()
                server.wait_listening()
                return
        args, env = self._args[name]
        idx = next(i for i, (p, _) in enumerate(self.children) if p.name == name)
        proc = self.children[idx][0]
        popen = spawn(args, self.data / f"{name}.log", env)
        proc.pid = popen.pid
        self.children[idx] = (proc, popen)
        self.state.save(self.data)

    def stop(self) -> None:
        for kind in ("gateway", "node", "custody"):
            group = [(p, c) for p, c in self.children if p.kind == kind]
            for _, child in group:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            for _, child in group:
                try:
                    child.wait(15)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        for server in self.nats:
            server.stop()

    def watch(self, print_fn: Any = print) -> None:
        """Until SIGTERM/SIGINT: report children that exit."""
        stopping = False

        def on_signal(signum: int, _frame: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        reported: set[str] = set()
        while not stopping:
            for proc, child in self.children:
                if proc.name not in reported and child.poll() is not None:
                    reported.add(proc.name)
                    print_fn(f"{proc.name} exited with status {child.returncode} "
                             f"(log: {self.data / (proc.name + '.log')})")
            time.sleep(0.2)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
