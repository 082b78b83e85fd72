"""``bastion upgrade``: move a running cluster to another engine version, and back, refusing to
go on at the first failed step (Kraken 2018: the replacement must be provable beforehand and
reversible afterwards).

1. shadow-check the candidate against the running version over the cluster's stream;
2. start a standby on the candidate (its own process, ``PYTHONPATH`` at the candidate source);
3. let it catch up and verify state hashes at the leader's checkpoints;
4. ``cluster switchover`` to it (the order-entry pause is the switchover's);
5. restart every other engine node on the candidate, one at a time, each verified the same way.

Versions live under ``<data>/versions/``; ``<data>/upgrade.json`` records the running and the
previous version, so ``--back`` returns to the previous one by the same five steps.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from bastion.cluster.config import ClusterConfig
from bastion.cluster.control import status, switchover
from bastion.cluster.natsproc import ZONES
from bastion.cluster.supervisor import ClusterState, Proc, alive, node_args, spawn
from bastion.journal.errors import DurabilityError
from bastion.journal.jetstream import JetStreamJournal
from bastion.journal.natsloop import NatsLoop
from bastion.ops.shadow import current_source, materialize, report_dict, shadow_journal
from bastion.ops.shadow_diff import IntendedDifference

STATE_FILE = "upgrade.json"


class UpgradeError(DurabilityError):
    code = "UPGRADE_FAILED"


@dataclass
class Version:
    label: str
    root: str

    @classmethod
    def installed(cls) -> Version:
        return cls("installed", str(current_source()))


@dataclass
class UpgradeLog:
    current: Version
    previous: Version | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, data: Path) -> UpgradeLog:
        path = data / STATE_FILE
        if not path.exists():
            return cls(Version.installed())
        raw = json.loads(path.read_text())
        prev = raw.get("previous")
        return cls(Version(**raw["current"]), Version(**prev) if prev else None,
                   raw.get("history", []))

    def save(self, data: Path) -> None:
        tmp = data / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps({
            "current": self.current.__dict__,
            "previous": self.previous.__dict__ if self.previous else None,
            "history": self.history}, indent=1))
        os.replace(tmp, data / STATE_FILE)


@dataclass
class Step:
    name: str
    ok: bool
    detail: str
    seconds: float


@dataclass
class UpgradeReport:
    target: Version
    steps: list[Step] = field(default_factory=list)
    pause_ms: int | None = None
    shadow: dict[str, object] | None = None

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)


def _install(candidate: str, data: Path, repo: Path) -> Version:
    """Copy the candidate source under ``<data>/versions/`` (processes run from it for as
    long as the cluster does, so it cannot live in a temporary directory)."""
    with tempfile.TemporaryDirectory(prefix="bastion-upgrade-") as tmp:
        root, label = materialize(candidate, Path(tmp), repo)
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in label)[:80]
        dest = data / "versions" / f"{safe}-{int(time.time())}" / "src"
        shutil.copytree(root / "bastion", dest / "bastion",
                        ignore=shutil.ignore_patterns("__pycache__"))
    return Version(label, str(dest))


def _journal(cfg: ClusterConfig) -> JetStreamJournal:
    nats = NatsLoop(list(cfg.servers), name="bastion-upgrade", connect_wait=5.0)
    return JetStreamJournal(nats, cfg.stream, cfg.log_subject, owns_nats=True)


def _env(version: Version) -> dict[str, str]:
    env = dict(os.environ)
    if version.label == "installed":
        env.pop("PYTHONPATH", None)
    else:
        env["PYTHONPATH"] = version.root
    return env


def _row(rows: dict[str, Any], name: str) -> dict[str, Any]:
    return rows.get(name) or {}


async def _rows(state: ClusterState) -> dict[str, Any]:
    return {r["name"]: r for r in (await status(state))["processes"]}


async def _hashes(cfg: ClusterConfig, names: list[str]) -> list[dict[str, Any]]:
    """Each node's ``{seq, hash}`` right now (the nodes' ``hash`` verb)."""
    nats = await asyncio.to_thread(NatsLoop, list(cfg.servers), name="bastion-upgrade",
                                   connect_wait=5.0)
    try:
        out = []
        for name in names:
            try:
                msg = await nats.call(nats.nc.request(cfg.node_subject(name, "hash"), b"",
                                                      timeout=5.0))
                out.append(msgspec.json.decode(msg.data))
            except Exception:
                out.append({})
        return out
    finally:
        await asyncio.to_thread(nats.close)


async def wait_verified(state: ClusterState, name: str, timeout: float) -> str:
    """Until ``name`` is a standby at the leader's seq whose state hash is proven equal to the
    leader's: a checkpoint verified since it caught up (under traffic), or both hashed at the
    same seq (when idle). The reason it is not, on timeout."""
    t0 = time.monotonic()
    target: int | None = None
    checked0: int | None = None
    why = "not answering"
    while time.monotonic() - t0 < timeout:
        rows = await _rows(state)
        me = _row(rows, name)
        leader = next((r for r in rows.values() if r.get("role") == "leader"), None)
        if me.get("diverged"):
            return f"diverged: {me['diverged']}"
        if me.get("role") == "standby" and leader is not None and me.get("seq") is not None:
            target = int(leader["seq"]) if target is None else target
            if int(me["seq"]) >= target:
                checked = int(me.get("checked") or 0)
                checked0 = checked if checked0 is None else checked0
                if checked > checked0:
                    return ""
                mine, theirs = await _hashes(state.config(), [name, leader["name"]])
                if mine.get("seq") and mine.get("seq") == theirs.get("seq"):
                    if mine.get("hash") == theirs.get("hash"):
                        return ""
                    return (f"state hash differs from the leader's at seq {mine['seq']}: "
                            f"{str(mine.get('hash'))[:16]} vs {str(theirs.get('hash'))[:16]}")
                why = f"caught up to seq {me['seq']}, waiting for a hash at the leader's seq"
            else:
                why = f"catching up: seq {me['seq']} of {target}"
        await asyncio.sleep(0.2)
    return f"not verified within {timeout:.0f} s ({why})"


def _stop(pid: int, timeout: float = 1.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``: only ever used on a standby, which holds no
    lease and writes nothing, so a kill loses nothing."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    t0 = time.monotonic()
    while alive(pid) and time.monotonic() - t0 < timeout:
        time.sleep(0.05)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)


def _start_node(state: ClusterState, data: Path, proc: Proc, version: Version) -> None:
    args = node_args(state.servers, proc.name, proc.zone, data / proc.name, state.shard)
    proc.pid = spawn(args, data / f"{proc.name}.log", _env(version)).pid
    state.save(data)


async def upgrade(data: Path, candidate: str | None, *, back: bool = False,
                  repo: Path | None = None, rules: list[IntendedDifference] | None = None,
                  timeout: float = 120.0,
                  progress: Callable[[str], None] = lambda _: None) -> UpgradeReport:
    """The five steps; stops at the first that fails (what ran stays as it is, reported)."""
    log = UpgradeLog.load(data)
    state = ClusterState.load(data)
    if back:
        if log.previous is None:
            raise UpgradeError("no previous version recorded: nothing to go back to")
        target = log.previous
    else:
        if not candidate:
            raise UpgradeError("give --candidate PATH_OR_GIT_REF (or --back)")
        target = await asyncio.to_thread(_install, candidate, data, repo or Path.cwd())
    rep = UpgradeReport(target)

    def step(name: str, ok: bool, detail: str, t0: float) -> bool:
        rep.steps.append(Step(name, ok, detail, round(time.monotonic() - t0, 3)))
        progress(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
        return ok

    t0 = time.monotonic()
    journal = await asyncio.to_thread(_journal, state.config())
    try:
        sh = await asyncio.to_thread(shadow_journal, target.root, journal, rules=rules,
                                     baseline=Path(log.current.root))
    finally:
        journal.close()
    rep.shadow = report_dict(sh)
    detail = (f"{sh.diff.commands} commands, candidate {sh.candidate.ops_per_second:,.0f} "
              f"cmd/s vs {sh.baseline.ops_per_second:,.0f}")
    if not step("shadow-check", sh.diff.clean, detail if sh.diff.clean else
                f"unexplained differences: {dict(sh.diff.unexplained)}", t0):
        return rep

    t0 = time.monotonic()
    nodes = [p for p in state.processes if p.kind == "node"]
    zone = ZONES[len(nodes) % len(ZONES)]
    fresh = Proc(f"node-{len(nodes) + 1}{zone}", "node", zone, 0, 0)
    state.processes.append(fresh)
    await asyncio.to_thread(_start_node, state, data, fresh, target)
    if not step(f"standby on {target.label}", True, f"{fresh.name} pid {fresh.pid}", t0):
        return rep

    t0 = time.monotonic()
    why = await wait_verified(state, fresh.name, timeout)
    if not step("caught up, hashes verified", not why, why or fresh.name, t0):
        await asyncio.to_thread(_stop, fresh.pid)  # never promoted: leave no stray node
        state.processes.remove(fresh)
        state.save(data)
        return rep

    t0 = time.monotonic()
    result = await switchover(state, fresh.name)
    ok = bool(result.get("ok"))
    rep.pause_ms = result.get("pause_ms") if ok else None
    if not step("switchover", ok, f"{result.get('from')} -> {result.get('to')}, order entry "
                                  f"paused {result.get('pause_ms')} ms" if ok else str(result),
                t0):
        return rep

    for proc in nodes:
        t0 = time.monotonic()
        role = _row(await _rows(state), proc.name).get("role")
        if role == "leader":
            step(f"{proc.name} on {target.label}", False, "it holds the lease: not stopped", t0)
            return rep
        await asyncio.to_thread(_stop, proc.pid)
        await asyncio.to_thread(_start_node, state, data, proc, target)
        why = await wait_verified(state, proc.name, timeout)
        if not step(f"{proc.name} on {target.label}", not why, why or f"pid {proc.pid}", t0):
            return rep

    log.history.append({"at": time.time(), "from": log.current.label, "to": target.label,
                        "pause_ms": rep.pause_ms, "back": back})
    log.previous, log.current = log.current, target
    log.save(data)
    return rep
