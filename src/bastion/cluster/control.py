"""Operator verbs on a running cluster: ``status`` (every process's role and seq) and a
planned ``switchover`` (drain, hand the lease over, promote a caught-up standby)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec

from bastion.cluster.config import ClusterConfig
from bastion.cluster.lease import Holder, Lease
from bastion.cluster.supervisor import ClusterState, alive
from bastion.journal.errors import DurabilityError
from bastion.journal.natsloop import NatsLoop


async def _request(nats: NatsLoop, subject: str, data: bytes = b"",
                   timeout: float = 1.0) -> Any | None:
    try:
        msg = await nats.call(nats.nc.request(subject, data, timeout=timeout))
    except Exception:
        return None
    return msgspec.json.decode(msg.data)


async def _leader(nats: NatsLoop, cfg: ClusterConfig) -> str | None:
    lease = await nats.call(Lease(nats.js, cfg.lease_bucket, cfg.lease_ttl, 0.0,
                                  Holder("", "")).open())
    current = await nats.call(lease.current())
    return None if current is None else current[0].node


async def _stream_leader(nats: NatsLoop, cfg: ClusterConfig) -> tuple[str, int]:
    try:
        info = await nats.call(nats.js.stream_info(cfg.stream))
    except Exception:
        return "", 0
    return (info.cluster.leader if info.cluster else "") or "", info.state.last_seq


async def status(state: ClusterState, connect_wait: float = 5.0) -> dict[str, Any]:
    cfg = state.config()
    nats = await asyncio.to_thread(NatsLoop, list(cfg.servers), name="bastion-status",
                                   connect_wait=connect_wait)
    try:
        stream_leader, stream_seq = await _stream_leader(nats, cfg)
        out = []
        for p in state.processes:
            row: dict[str, Any] = {"name": p.name, "kind": p.kind, "zone": p.zone,
                                   "pid": p.pid, "port": p.port, "role": "", "seq": None,
                                   "alive": alive(p.pid)}
            if p.kind == "nats":
                row["role"] = "stream-leader" if p.name == stream_leader else ""
                row["seq"] = stream_seq if p.name == stream_leader else None
            elif p.kind == "node" and not row["alive"]:
                row["role"] = "down"
            elif p.kind == "node":
                # a node answers from its first second: starting (loading its snapshot and
                # reading the stream), standby, promoting, leader
                answer = await _request(nats, cfg.node_subject(p.name, "status"))
                row["role"] = str(answer["role"]) if answer else "no-answer"
                if answer:
                    row["seq"] = answer["seq"]
                    row["diverged"] = answer.get("diverged")
            elif p.kind == "gateway" and row["alive"]:
                answer = await _request(nats, cfg.gateway_subject(p.name, "status"))
                if answer:
                    row["seq"] = answer["seq"]
            out.append(row)
        return {"processes": out, "problems": problems(out)}
    finally:
        await asyncio.to_thread(nats.close)


def problems(rows: list[dict[str, Any]]) -> list[str]:
    """What an operator must act on, one line each: a standby barred from promotion by the
    divergence alarm, and a cluster with no leader that no standby can become."""
    nodes = [r for r in rows if r["kind"] == "node"]
    out = [f"DIVERGED: {r['name']} disagrees with the leader's state hash ({r['diverged']}); "
           "it is barred from promotion: rebuild it from a snapshot" for r in nodes
           if r.get("diverged")]
    if nodes and not any(r["role"] == "leader" for r in nodes):
        ready = [r["name"] for r in nodes if not r.get("diverged")
                 and r["role"] in ("standby", "resuming", "promoting")]
        if ready:
            out.append(f"NO_LEADER: no node leads yet; {', '.join(ready)} can take over")
        else:
            barred = [r["name"] for r in nodes if r.get("diverged")]
            out.append("NO_LEADER: no node leads and none can be promoted (" + (
                f"barred, diverged: {', '.join(barred)}; " if barred else "") +
                "the others are down or starting): order entry is stopped; restart a healthy "
                "node")
    return out


async def switchover(state: ClusterState, target: str | None = None) -> dict[str, Any]:
    cfg = state.config()
    nats = await asyncio.to_thread(NatsLoop, list(cfg.servers), name="bastion-switchover",
                                   connect_wait=5.0)
    try:
        leader = await _leader(nats, cfg)
        if leader is None:
            raise DurabilityError("no node holds the lease right now", code="NO_LEADER")
        candidates = []
        for p in state.processes:
            if p.kind != "node" or p.name == leader or (target and p.name != target):
                continue
            answer = await _request(nats, cfg.node_subject(p.name, "status"))
            if answer and answer["role"] == "standby" and not answer.get("diverged"):
                candidates.append((answer["seq"], p.name))
        if not candidates:
            raise DurabilityError("no caught-up, healthy standby to promote",
                                  code="NO_STANDBY")
        chosen = max(candidates)[1]
        answer = await _request(nats, cfg.node_subject(leader, "switchover"),
                                chosen.encode(), timeout=20.0)
        if answer is None:
            raise DurabilityError(f"leader {leader} did not answer the switchover request",
                                  code="SWITCHOVER_FAILED")
        return dict(answer)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(nats.close)
