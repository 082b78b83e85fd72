"""``bastion cluster up|status|switchover``, ``bastion node`` and ``bastion gateway``: the
replicated deployment (NATS JetStream journal, leader + standbys, stateless gateways)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli.durability import err, out
from bastion.cli.errors import clean_errors
from bastion.cluster.config import ClusterConfig

cluster_app = typer.Typer(help="Run and operate a replicated cluster.", no_args_is_help=True)

DataOpt = Annotated[Path, typer.Option("--data", help="Cluster data directory.")]
ServersOpt = Annotated[str, typer.Option(
    "--servers", envvar="BASTION_NATS", help="NATS URLs, comma-separated (every zone's).")]
ShardOpt = Annotated[str, typer.Option("--shard", help="Shard name (one stream per shard).")]


def _config(servers: str, shard: str, **extra: float) -> ClusterConfig:
    urls = tuple(s.strip() for s in servers.split(",") if s.strip())
    env = os.environ
    knobs = {
        "lease_ttl": float(env.get("BASTION_LEASE_TTL", "2.0")),
        "recovery_window_ms": int(env.get("BASTION_RECOVERY_MS", str(20 * 60 * 1000))),
        "checkpoint_every": float(env.get("BASTION_CHECKPOINT_S", "10")),
        "snapshot_every": float(env.get("BASTION_SNAPSHOT_S", "300")),
        "election_wait": float(env.get("BASTION_ELECTION_WAIT", "8")),
        "connect_wait": float(env.get("BASTION_NATS_CONNECT_WAIT", "10")),
    }
    knobs.update(extra)
    ttl = knobs["lease_ttl"]
    return ClusterConfig(servers=urls, shard=shard, renew_every=ttl / 5,
                         lease_margin=min(0.3, ttl / 5), **knobs)  # type: ignore[arg-type]


@cluster_app.command("up")
@clean_errors
def up(data: DataOpt, port: int = 8080, nodes: int = 2, gateways: int = 1,
       nats_port: Annotated[int, typer.Option(help="First NATS client port (3 used; "
                                                   "cluster routes +100, monitoring +200; "
                                                   "0: free ports).")]
       = 4222) -> None:
    """Start 3 NATS servers (zones a/b/c), one custody simulator (unless BASTION_CUSTODY_URL
    names a custody service), the engine nodes and the gateways on this machine; stay in the
    foreground; stop everything on Ctrl-C/SIGTERM."""
    from bastion.cluster.childlife import bind_children
    from bastion.cluster.supervisor import Supervisor

    bind_children()  # killed outright, it takes its children along: nothing runs unsupervised
    sup = Supervisor(data, port=port, nodes=nodes, gateways=gateways,
                     nats_port=nats_port or None)
    state = sup.start()
    try:
        for p in state.processes:
            role = {"nats": "nats", "node": "engine node", "gateway": "gateway",
                    "custody": "custody-sim"}[p.kind]
            where = f"port {p.port}" if p.port else f"log {data / (p.name + '.log')}"
            out.print(f"{p.name:<10} {role:<12} zone {p.zone}  pid {p.pid:<8} {where}",
                      markup=False)
        out.print(f"gateway: http://127.0.0.1:{port}   status: bastion cluster status "
                  f"--data {data}   switchover: bastion cluster switchover --data {data}",
                  markup=False)
        sup.watch(lambda line: err.print(line, markup=False))
    finally:
        sup.stop()


@cluster_app.command("status")
@clean_errors
def status(data: DataOpt, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every process: kind, zone, pid, port, role (leader/standby/stream-leader) and seq; then
    one ALARM line per problem (a diverged standby, no leader and none promotable)."""
    from bastion.cluster.control import status as fetch
    from bastion.cluster.supervisor import ClusterState

    result = asyncio.run(fetch(ClusterState.load(data)))
    if as_json:
        out.print(json.dumps(result), markup=False)
        return
    for p in result["processes"]:
        state = "" if p["alive"] else "  DEAD"
        barred = "  DIVERGED (barred)" if p.get("diverged") else ""
        out.print(f"{p['name']:<10} {p['kind']:<8} zone {p['zone']}  pid {p['pid']:<8} "
                  f"port {p['port'] or '-':<6} {p['role'] or '-':<14} seq {p['seq']}{state}"
                  f"{barred}", markup=False)
    for problem in result.get("problems", []):
        out.print(f"ALARM {problem}", markup=False)


@cluster_app.command("switchover")
@clean_errors
def switchover(data: DataOpt, to: Annotated[str, typer.Option(
        help="Node to promote (default: the most caught-up healthy standby).")] = "",
        as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Planned switchover: drain the leader, fence it, promote a caught-up standby; prints
    the order-entry pause in ms."""
    from bastion.cluster.control import switchover as run
    from bastion.cluster.supervisor import ClusterState

    result = asyncio.run(run(ClusterState.load(data), to or None))
    if as_json:
        out.print(json.dumps(result), markup=False)
    elif result.get("ok"):
        out.print(f"switchover {result['from']} -> {result['to']}: order entry paused "
                  f"{result['pause_ms']} ms (drain {result['drain_ms']} ms)", markup=False)
    else:
        err.print(f"error: SWITCHOVER_FAILED: {result}", markup=False)
        raise typer.Exit(2)


@clean_errors
def node_cmd(servers: ServersOpt, name: Annotated[str, typer.Option(help="Unique node name.")],
             zone: Annotated[str, typer.Option(help="Zone tag (a, b, c).")],
             data: Annotated[Path, typer.Option("--data", help="Local scratch/snapshot dir.")],
             shard: ShardOpt = "main") -> None:
    """Run one engine node: standby (tails the stream) or leader (holds the lease)."""
    from bastion.cluster.runner import run_node

    demo = os.environ.get("BASTION_DEMO", "1") not in ("0", "false", "no")
    run_node(_config(servers, shard), name, zone, data, demo=demo)


@clean_errors
def gateway_cmd(servers: ServersOpt, port: int = 8080,
                name: Annotated[str, typer.Option(help="Unique gateway name.")] = "gateway-1",
                data: Annotated[Path, typer.Option("--data", help="API keys, status db.")]
                = Path("gateway"),
                shard: ShardOpt = "main") -> None:
    """Run one stateless gateway: HTTP/WebSocket API, commands to the leader, reads from a
    local replica of the stream."""
    from bastion.api.config import load_settings
    from bastion.cluster.runner import run_gateway

    settings = load_settings()
    settings.port = port
    settings.data_dir = data
    run_gateway(_config(servers, shard), name, settings)
