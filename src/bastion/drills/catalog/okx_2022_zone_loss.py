"""OKX, 18-19 Dec 2022: a whole cloud zone dies; trading must continue from the others.

Deployment: the cluster (3 NATS servers in zones a/b/c, two engine nodes in a and b, one
gateway), not the embedded node. Fault: the zone of the leader dies (its NATS server and its
engine node, SIGKILL) under bot traffic. Response: nothing by hand. The standby in the other
zone takes the lease when it expires, reads to the end of the replicated stream and reopens
every market in ``recovery`` (20 s here, 4 s in CI); the gateway retries through the election.
Figures: RTO (kill to the first accepted order), RPO (acknowledged orders lost: must be 0) and
the recovery-mode window. Then the zone comes back and rejoins as standby.

For the runner's offline audit the stream is copied into a local journal when the cluster
stops, so the same checks (journal verifies, replay passes every invariant) run on it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from pathlib import Path

from bastion.cluster.natsproc import free_port
from bastion.cluster.supervisor import Supervisor
from bastion.drills.base import Drill, DrillOptions, Run
from bastion.drills.client import OperatorClient, TradingClient
from bastion.drills.deployment import Deployment

PROBE_ACCOUNT = 901


class ClusterDeployment(Deployment):
    """The cluster behind one gateway, with the ``Deployment`` verbs the runner uses."""

    def __init__(self, root: Path, *, recovery_s: float, lease_ttl: float = 2.0) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.token = secrets.token_urlsafe(18)
        self.demo = True
        self.log_path = root / "cluster" / "gateway-1.log"
        self.starts = 0
        self.operator = OperatorClient(self.url, self.token)
        env = dict(os.environ)
        env.update({"BASTION_ADMIN_TOKEN": self.token, "BASTION_RATE_KEY": "0",
                    "BASTION_RATE_IP": "0", "BASTION_HEALTH_INTERVAL": "5",
                    "BASTION_LEASE_TTL": str(lease_ttl), "BASTION_SNAPSHOT_S": "0",
                    "BASTION_RECOVERY_MS": str(int(recovery_s * 1000)),
                    "BASTION_CHECKPOINT_S": "1", "BASTION_ELECTION_WAIT": "15"})
        self.sup = Supervisor(root / "cluster", port=self.port, nodes=2, gateways=1,
                              nats_port=None, env=env)

    def start(self, timeout: float = 60.0) -> float:
        import httpx

        t0 = time.monotonic()
        self.sup.start()
        self.starts += 1
        while time.monotonic() - t0 < timeout:
            try:
                if httpx.get(self.url + "/v1/markets", timeout=0.5).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"cluster did not come up in {timeout} s:\n{self.tail()}")

    def leader(self) -> tuple[str, str] | None:
        """(node name, zone) of the lease holder."""
        from bastion.cluster.control import status

        answer = asyncio.run(status(self.sup.state, connect_wait=5))
        for p in answer["processes"]:
            if p["kind"] == "node" and p["role"] == "leader":
                return p["name"], p["zone"]
        return None

    def stop(self, timeout: float = 30.0) -> int | None:
        self.export_stream()
        self.sup.stop()
        return 0

    def kill(self) -> None:
        self.sup.stop()

    def export_stream(self) -> None:
        """Copy the replicated stream into ``data/journal`` (local format) for the audit."""
        from bastion.journal.jetstream import JetStreamJournal
        from bastion.journal.local import LocalJournal
        from bastion.journal.natsloop import NatsLoop
        from bastion.node.layout import DataDir

        layout = DataDir.at(self.data)
        layout.snapshots.mkdir(parents=True, exist_ok=True)
        cfg = self.sup.state.config()
        nats = NatsLoop(list(cfg.servers), connect_wait=10)
        try:
            stream = JetStreamJournal(nats, cfg.stream, cfg.log_subject)
            with LocalJournal(layout.journal, archive_dir=layout.journal_archive) as local:
                batch: list[bytes] = []
                for _seq, payload in stream.read(local.last_seq + 1):
                    batch.append(payload)
                    if len(batch) >= 4096:
                        local.append(batch, local.last_seq)
                        batch = []
                if batch:
                    local.append(batch, local.last_seq)
        finally:
            nats.close()

    async def close(self) -> None:
        await asyncio.to_thread(self.stop)
        await self.operator.close()


class OkxZoneLoss(Drill):
    name = "okx-2022-zone-loss"
    title = "the leader's zone dies (NATS server + engine node); the other zones take over"
    incident = "OKX 18-19 Dec 2022 (a cloud zone failed; trading stopped for hours)"
    markets = ("BTC-USDT",)
    warmup = (10.0, 4.0)
    cooldown = (8.0, 3.0)

    def protection_s(self, opts: DrillOptions) -> float:
        return 4.0 if opts.short else 20.0

    def deployment(self, root: Path, opts: DrillOptions) -> Deployment:
        return ClusterDeployment(root, recovery_s=self.protection_s(opts))

    async def fault(self, run: Run) -> None:
        dep = run.deployment
        assert isinstance(dep, ClusterDeployment)
        probe = await dep.operator.new_trader(PROBE_ACCOUNT, {"USDT": "1000000", "BTC": "10"})
        run.state["probe"] = probe
        leader = await asyncio.to_thread(dep.leader)
        if leader is None:
            raise RuntimeError("no leader before the fault")
        name, zone = leader
        seq = (await dep.operator.must("GET", "/admin/health"))["seq"]
        t0 = time.monotonic()
        await asyncio.to_thread(dep.sup.kill, name)
        await asyncio.to_thread(dep.sup.kill, f"nats-{zone}")
        run.state.update(t0=t0, zone=zone, killed=name)
        run.faulted(f"zone {zone} lost: SIGKILL of nats-{zone} and leader {name}", seq=seq + 1)

    async def response(self, run: Run) -> None:
        dep = run.deployment
        assert isinstance(dep, ClusterDeployment)
        probe: TradingClient = run.state["probe"]
        t0 = run.state["t0"]
        accepted = None
        i = 0
        while time.monotonic() - t0 < 60:
            i += 1
            reply = await probe.place(market="BTC-USDT", side="buy", price="30000",
                                      quantity="0.001", post_only=True,
                                      client_order_id=f"rto-{i}")
            if reply.ok:
                accepted = time.monotonic()
                break
            await asyncio.sleep(0.05)
        rto = None if accepted is None else round(accepted - t0, 3)
        run.figure("rto_s", rto)
        run.check("order entry resumed without operator action", rto is not None,
                  f"{rto} s after the zone died")
        survivor = await asyncio.to_thread(dep.leader)
        run.check("a node in another zone leads",
                  survivor is not None and survivor[1] != run.state["zone"], str(survivor))
        listing = await probe.public("/v1/markets")
        modes = {m["market"]: m for m in listing.body}
        run.check("markets reopened in recovery",
                  all(modes[m]["mode"] == "recovery" for m in self.markets),
                  ", ".join(f"{m}={modes[m]['mode']}" for m in self.markets))
        until = max(modes[m]["mode_until"] for m in self.markets)
        run.figure("recovery_window_s", self.protection_s(run.opts))
        run.note(f"new leader {survivor}; recovery until {until}", "response")
        await asyncio.to_thread(dep.sup.restart, f"nats-{run.state['zone']}")
        await asyncio.to_thread(dep.sup.restart, run.state["killed"])
        run.note(f"zone {run.state['zone']} back: nats and {run.state['killed']} rejoin",
                 "response")
        deadline = time.monotonic() + self.protection_s(run.opts) + 20
        while time.monotonic() < deadline:
            listing = await probe.public("/v1/markets")
            if listing.ok and all(m["mode"] == "open" for m in listing.body
                                  if m["market"] in self.markets):
                run.note("markets back to open by themselves", "response")
                return
            await asyncio.sleep(0.2)
        run.check("markets return to open after the recovery window", False, "timed out")

    async def verify(self, run: Run) -> None:
        lost = run.report.figures.get("acknowledged_commands_lost")
        run.figure("rpo_acknowledged_lost", lost)
        await run.state["probe"].close()


DRILL = OkxZoneLoss()
