"""The replicated journal: throughput, ack latency, failover time and switchover pause.

    python bench/replicated.py [--ops 300000] [--kills 10] [--switchovers 5] [--json]
    python bench/replicated.py --quick        # smoke run: small, 3 kills each

1. **Throughput**: the ``churn`` workload through the node with the R3 JetStream journal
   (3 local nats-server processes, zones a/b/c, every write fsynced on each) against the same
   node with the local durable journal, alternating, best of ``--repeat`` (bench/durable.py's
   ``node_run``). Target ratio >= 0.5.
2. **RTO** over ``--kills`` SIGKILLs of the leader engine node and of the NATS server leading the
   stream, measured from the kill to the first new acknowledgement a client sees through a
   gateway (targets for a node: p50 <= 3 s, max <= 6 s). For the stream leader the NATS election
   alone is measured too (kill -> the stream's new leader answers a leader read; the lease
   bucket's likewise): Bastion's share is the difference.
3. **Switchover pause** over ``--switchovers`` planned switchovers (target <= 250 ms): the pause
   the old leader measures (stop accepting -> successor serving) and the longest gap between
   acknowledgements seen by a client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bastion.cluster.natsproc import cluster_specs, start_cluster  # noqa: E402
from bastion.journal.jetstream import JetStreamJournal, ensure_stream  # noqa: E402
from bastion.journal.natsloop import NatsLoop  # noqa: E402
from bench.durable import node_run  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


# --- 1. throughput -------------------------------------------------------------------------


def replicated_run(ops: int, batch: int, depth: int, workdir: Path) -> dict[str, float]:
    specs = cluster_specs(workdir)
    servers = start_cluster(specs)
    loop = NatsLoop([s.url for s in specs], connect_wait=20)
    try:
        loop.run(ensure_stream(loop.js, "BENCH", "bench.log", 3))
        journal = JetStreamJournal(loop, "BENCH", "bench.log")
        journal.become_writer(1, journal.tail)
        return asyncio.run(node_run(ops, batch, depth, workdir / "node", 0.0, journal=journal))
    finally:
        loop.close()
        for server in servers:
            server.kill()


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    local: list[dict[str, float]] = []
    replicated: list[dict[str, float]] = []
    for _ in range(args.repeat):
        for kind, runs in (("local", local), ("replicated", replicated)):
            workdir = Path(tempfile.mkdtemp(prefix=f"bastion-{kind}-"))
            try:
                if kind == "local":
                    runs.append(asyncio.run(node_run(args.ops, args.batch, args.depth,
                                                     workdir, 0.001)))
                else:
                    runs.append(replicated_run(args.ops, args.batch, args.depth, workdir))
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
    best_local = min(local, key=lambda r: r["seconds"])
    best_repl = min(replicated, key=lambda r: r["seconds"])
    if (best_local["orders"], best_local["trades"]) != (best_repl["orders"], best_repl["trades"]):
        raise SystemExit("replicated and local nodes diverged on the same stream")
    return {
        "ops": args.ops,
        "local_ops_per_s": round(args.ops / best_local["seconds"]),
        "replicated_ops_per_s": round(args.ops / best_repl["seconds"]),
        "ratio": round(best_local["seconds"] / best_repl["seconds"], 3),
        "runs_local_ops_per_s": [round(args.ops / r["seconds"]) for r in local],
        "runs_replicated_ops_per_s": [round(args.ops / r["seconds"]) for r in replicated],
        "messages": int(best_repl["fsyncs"]),
        "commands_per_message": round(best_repl["records"] / max(1, best_repl["fsyncs"]), 1),
        "ack_p50_ms": round(best_repl["p50_ms"], 2),
        "ack_p99_ms": round(best_repl["p99_ms"], 2),
        "local_ack_p50_ms": round(best_local["p50_ms"], 2),
        "local_ack_p99_ms": round(best_local["p99_ms"], 2),
    }


# --- 2. and 3. failover and switchover on a real cluster -----------------------------------


def _stream_leader(cluster: Any, stream: str = "") -> str:
    try:
        return str(cluster.stream_leader_zone(stream))
    except Exception:
        return ""


def _serving(probe: NatsLoop, stream: str, subject: str) -> bool:
    """A leader read on ``stream`` answered (found or not found) within 0.25 s (a healthy
    leader answers in milliseconds; the timeout bounds the measure's resolution)."""
    from nats.js.errors import NotFoundError

    try:
        if subject:
            probe.run(asyncio.wait_for(probe.js.get_msg(stream, subject=subject), 0.25))
        else:
            probe.run(asyncio.wait_for(probe.js.get_msg(stream, 1), 0.25))
    except NotFoundError:
        return True
    except Exception:
        return False
    return True


def failovers(args: argparse.Namespace) -> dict[str, Any]:
    from bastion.cluster.control import switchover
    from bastion.cluster.supervisor import ClusterState
    from cluster_harness import Cluster, Load

    root = Path(tempfile.mkdtemp(prefix="bastion-rto-"))
    cluster = Cluster(root, nodes=3, gateways=1,
                      env={"BASTION_LEASE_TTL": str(args.lease_ttl),
                           "BASTION_SNAPSHOT_S": "0"})
    out: dict[str, Any] = {"lease_ttl_s": args.lease_ttl}
    try:
        cluster.start()
        load = Load([cluster.url()], threads=2).start()
        load.wait_acks(50)
        node_rto: list[float] = []
        for _ in range(args.kills if args.node_kills is None else args.node_kills):
            leader = cluster.wait_leader()
            t0 = time.monotonic()
            cluster.signal(leader, signal.SIGKILL)
            first = load.wait_acks(5, timeout=60)
            node_rto.append(first - t0)
            cluster.restart(leader)
            time.sleep(1.0)
        out["node_kill_rto_s"] = [round(x, 3) for x in node_rto]
        out["node_kill_rto_p50_s"] = round(statistics.median(node_rto), 3) if node_rto else None
        out["node_kill_rto_max_s"] = round(max(node_rto), 3) if node_rto else None

        nats_rto: list[float] = []
        elections: list[float] = []
        lease_elections: list[float] = []
        lease_killed: list[bool] = []
        node_moved: list[bool] = []
        kill_times: list[str] = []  # wall clock, to find each kill in the kept logs
        cfg = cluster.config()
        lease_stream = f"KV_{cfg.lease_bucket}"
        lease_subject = f"$KV.{cfg.lease_bucket}.leader"
        for _ in range(args.kills):
            zone = _stream_leader(cluster)
            lease_killed.append(_stream_leader(cluster, lease_stream) == zone)
            before = cluster.wait_leader()
            probe = NatsLoop([s.spec.url for z, s in cluster.nats.items() if z != zone],
                             connect_wait=10)
            t0 = time.monotonic()
            kill_times.append(time.strftime("%H:%M:%S", time.localtime()) +
                              f".{int(time.time() * 1000) % 1000:03d}")
            cluster.kill_nats(zone)
            # NATS is back for a stream when its (new) leader answers a leader read; the
            # stream info names a leader earlier than that, so it is not the measure
            back: dict[str, float] = {}
            time.sleep(0.5)  # the old leader may still be named for a moment
            while len(back) < 2 and time.monotonic() - t0 < 60:
                for stream, subject in ((cfg.stream, ""), (lease_stream, lease_subject)):
                    if stream not in back and _serving(probe, stream, subject):
                        back[stream] = time.monotonic() - t0
                time.sleep(0.02)
            probe.close()
            load.wait_acks(5, timeout=90)
            first = load.first_ack_after(t0 + 1.0) or time.monotonic()
            nats_rto.append(first - t0)
            elections.append(back.get(cfg.stream, 0.0))
            lease_elections.append(back.get(lease_stream, 0.0))
            node_moved.append(cluster.wait_leader() != before)
            cluster.restart_nats(zone)
            time.sleep(3.0)  # let the restarted server catch up before the next kill
        out["stream_leader_kill_at"] = kill_times
        out["stream_leader_kill_rto_s"] = [round(x, 3) for x in nats_rto]
        out["stream_leader_election_s"] = [round(x, 3) for x in elections]
        out["lease_bucket_election_s"] = [round(x, 3) for x in lease_elections]
        #: the killed server also led the lease bucket / the engine leader changed
        out["stream_leader_kill_lease_leader_killed"] = lease_killed
        out["stream_leader_kill_node_moved"] = node_moved
        out["stream_leader_kill_rto_p50_s"] = round(statistics.median(nats_rto), 3)
        out["stream_leader_kill_rto_max_s"] = round(max(nats_rto), 3)
        extra = [r - e for r, e in zip(nats_rto, elections, strict=True) if e]
        out["bastion_over_election_s"] = [round(x, 3) for x in extra]
        out["bastion_over_election_p50_s"] = round(statistics.median(extra), 3) if extra else None
        out["bastion_over_election_max_s"] = round(max(extra), 3) if extra else None
        both = [r - max(e, k) for r, e, k in zip(nats_rto, elections, lease_elections,
                                                  strict=True) if e and k]
        #: over the later of the two elections (the stream's and the lease bucket's)
        out["bastion_over_both_s"] = [round(x, 3) for x in both]
        out["bastion_over_both_p50_s"] = round(statistics.median(both), 3) if both else None
        out["bastion_over_both_max_s"] = round(max(both), 3) if both else None

        pauses: list[float] = []
        gaps: list[float] = []
        state = ClusterState.load(root)
        for _ in range(args.switchovers):
            cluster.wait_leader()
            time.sleep(1.0)
            t0 = time.monotonic()
            result = asyncio.run(switchover(state))
            t1 = time.monotonic()
            load.wait_acks(20, timeout=30)
            if not result.get("ok"):
                out.setdefault("switchover_failures", []).append(result)
                continue
            pauses.append(float(result["pause_ms"]))
            with load._lock:
                window = sorted(a for a in load.ack_times if t0 - 1 <= a <= t1 + 1)
            if len(window) > 1:
                gaps.append(max(b - a for a, b in zip(window, window[1:], strict=False)) * 1000)
        out["switchover_pause_ms"] = pauses
        out["switchover_pause_p50_ms"] = round(statistics.median(pauses), 1) if pauses else None
        out["switchover_pause_max_ms"] = round(max(pauses), 1) if pauses else None
        out["switchover_client_gap_max_ms"] = [round(g, 1) for g in gaps]
        load.stop()
        out["acked"] = load.count()
        out["client_errors"] = load.errors
    finally:
        cluster.stop()
        if args.keep:
            print(f"cluster logs kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ops", type=int, default=300_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--node-kills", type=int, default=None,
                    help="leader node kills (default: --kills)")
    ap.add_argument("--switchovers", type=int, default=5)
    ap.add_argument("--lease-ttl", type=float, default=2.0)
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-failover", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the failover cluster's logs")
    args = ap.parse_args()
    if args.quick:
        args.ops, args.repeat, args.kills, args.switchovers = 20_000, 1, 3, 2
    result: dict[str, Any] = {
        "machine": f"{platform.node()} {os.cpu_count()} cpus, {platform.python_implementation()} "
                   f"{platform.python_version()}",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    if not args.skip_throughput:
        result["throughput"] = throughput(args)
        t = result["throughput"]
        if not args.json:
            print(f"churn x{t['ops']}: local durable {t['local_ops_per_s']:,} ops/s, R3 "
                  f"JetStream {t['replicated_ops_per_s']:,} ops/s, ratio {t['ratio']} (target "
                  f">= 0.5); {t['commands_per_message']} commands per message; ack p50 "
                  f"{t['ack_p50_ms']} ms p99 {t['ack_p99_ms']} ms", flush=True)
    if not args.skip_failover:
        result["failover"] = f = failovers(args)
        if not args.json:
            print(f"leader node SIGKILL x{args.kills}: RTO p50 {f['node_kill_rto_p50_s']} s, max "
                  f"{f['node_kill_rto_max_s']} s (lease TTL {f['lease_ttl_s']} s; target p50 <= 3,"
                  f" max <= 6)")
            print(f"NATS stream leader SIGKILL x{args.kills}: RTO p50 "
                  f"{f['stream_leader_kill_rto_p50_s']} s, max {f['stream_leader_kill_rto_max_s']}"
                  f" s; NATS election {f['stream_leader_election_s']}; Bastion on top p50 "
                  f"{f['bastion_over_election_p50_s']} s, max {f['bastion_over_election_max_s']} s"
                  f" (each {f['bastion_over_election_s']}); lease bucket back after "
                  f"{f['lease_bucket_election_s']}; over the later of the two p50 "
                  f"{f['bastion_over_both_p50_s']} s, max {f['bastion_over_both_max_s']} s"
                  f" (each {f['bastion_over_both_s']})"
                  f"; each RTO {f['stream_leader_kill_rto_s']}; lease bucket led by the killed "
                  f"server {f['stream_leader_kill_lease_leader_killed']}; engine leader moved "
                  f"{f['stream_leader_kill_node_moved']}")
            print(f"switchover x{args.switchovers}: pause p50 {f['switchover_pause_p50_ms']} ms, "
                  f"max {f['switchover_pause_max_ms']} ms (target <= 250); client-seen gaps "
                  f"{f['switchover_client_gap_max_ms']} ms")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
