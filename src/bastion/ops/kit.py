"""The operator kit's actions on a running node. Each is journaled commands through the node
(``node.submit``), so it is in the audit trail and replays identically; the HTTP routes
(``bastion.api.operator.ops``) and the CLI (``bastion halt|cancel|maintenance|...``) are thin shells.

Operator decisions that are not engine state (an open maintenance window, a requested
rollback) are recorded in the data directory (atomic writes) and in ``audit.jsonl``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from bastion.core import commands as C
from bastion.core import events as E
from bastion.core.engine import Engine
from bastion.journal.errors import DurabilityError
from bastion.journal.fsutil import append_jsonl, atomic_write
from bastion.ops.cancel import CancelFilter, Selection, select
from bastion.snapshots.store import SnapshotInfo

MAINTENANCE_FILE = "maintenance.json"
ROLLBACK_REQUEST = "ROLLBACK-REQUEST.json"


class KitNode(Protocol):
    """What the kit needs of a node (``bastion.node.Node`` has it)."""

    @property
    def engine(self) -> Engine: ...

    @property
    def snapshot_pauses(self) -> list[float]: ...

    async def submit(self, cmd: C.Command) -> list[E.Event]: ...


    async def snapshot(self, name: str = ...) -> SnapshotInfo: ...


def markets_or_all(engine: Engine, markets: list[str] | None) -> list[str]:
    if not markets:
        return sorted(engine.markets)
    unknown = sorted(set(markets) - set(engine.markets))
    if unknown:
        raise DurabilityError(f"unknown market(s) {unknown}", code="UNKNOWN_MARKET")
    return sorted(set(markets))


async def set_modes(node: KitNode, markets: list[str] | None, mode: str, reason: str,
                    until_ts: int = 0) -> dict[str, str]:
    """Halt / resume / restrict: one journaled ``SetMarketMode`` per market; returns each
    market's resulting mode (unchanged ones included, refused ones with their code)."""
    if not reason.strip():
        raise DurabilityError("a mode change needs a reason", code="BAD_ARGUMENT")
    out: dict[str, str] = {}
    for m in markets_or_all(node.engine, markets):
        if node.engine.markets[m].mode == mode:
            out[m] = mode
            continue
        events = await node.submit(C.SetMarketMode(market=m, mode=mode,  # type: ignore[arg-type]
                                                   reason=reason, until_ts=until_ts))
        bad = [e for e in events if isinstance(e, E.Rejected)]
        out[m] = f"refused: {bad[0].code}" if bad else node.engine.markets[m].mode
    return out


@dataclass
class CancelResult:
    dry_run: bool
    selected: int
    canceled: int
    by_kind: dict[str, int]
    kept_by_kind: dict[str, int]
    seq: int


async def cancel(node: KitNode, flt: CancelFilter, dry_run: bool,
                 reason: str = "operator mass cancel") -> CancelResult:
    """Preview, then (unless a dry run) journal one ``CancelOrders``: the core applies the
    same filter when the command applies, so nothing placed in between escapes it."""
    sel: Selection = select(node.engine, flt)
    if dry_run or not sel.count:
        return CancelResult(dry_run, sel.count, 0, sel.by_kind, sel.kept_by_kind,
                            node.engine.seq)
    events = await node.submit(flt.command(reason))
    bad = [e for e in events if isinstance(e, E.Rejected)]
    if bad:
        raise DurabilityError(bad[0].message, code=bad[0].code)
    done = sum(1 for e in events if isinstance(e, (E.OrderCanceled, E.TriggerCanceled)))
    return CancelResult(False, sel.count, done, sel.by_kind, sel.kept_by_kind, node.engine.seq)


@dataclass
class OnlineSnapshot:
    id: str
    name: str
    seq: int
    #: the order-entry pause the fork caused
    pause_ms: float
    seconds: float
    path: str


async def online_snapshot(node: KitNode, name: str) -> OnlineSnapshot:
    """A named snapshot while trading continues (fork: the child writes, the parent trades);
    reports the order-entry pause the fork caused."""
    t0 = time.perf_counter()
    before = len(node.snapshot_pauses)
    info = await node.snapshot(name)
    pauses = node.snapshot_pauses[before:]
    return OnlineSnapshot(info.id, info.name, info.seq,
                          round(max(pauses, default=0.0) * 1000, 3),
                          round(time.perf_counter() - t0, 3), str(info.path))


@dataclass
class Maintenance:
    name: str
    snapshot: str
    seq: int
    mode: str
    reason: str
    previous: dict[str, str]
    status_id: str
    began_ms: int


def open_maintenance(data: Path) -> Maintenance | None:
    path = data / MAINTENANCE_FILE
    if not path.exists():
        return None
    return Maintenance(**json.loads(path.read_bytes()))


async def maintenance_begin(node: KitNode, data: Path, status: Any, name: str,
                            markets: list[str] | None, mode: str, reason: str,
                            minutes: int = 30) -> Maintenance:
    """Snapshot named ``name`` (online), chosen markets to ``mode`` (``""``: unchanged), the
    status page's maintenance opened and started; recorded in ``maintenance.json``."""
    if open_maintenance(data) is not None:
        raise DurabilityError("a maintenance is already open; end it first",
                              code="MAINTENANCE_OPEN")
    chosen = markets_or_all(node.engine, markets)
    snap = await online_snapshot(node, name)
    previous: dict[str, str] = {m: node.engine.markets[m].mode for m in chosen}
    if mode:
        await set_modes(node, chosen, mode, f"maintenance {name}: {reason}")
    status_id = ""
    now = int(time.time() * 1000)
    if status is not None:
        comps = [status.tracker.register_market(m) for m in chosen]
        m = status.operator.schedule_maintenance(f"Maintenance {name}", reason, comps, now,
                                        now + minutes * 60_000)
        status.operator.start_maintenance(m.id)
        status_id = m.id
    record = Maintenance(name, snap.id, snap.seq, mode, reason, previous, status_id, now)
    atomic_write(data / MAINTENANCE_FILE, json.dumps(asdict(record)).encode())
    append_jsonl(data / "audit.jsonl", {"event": "maintenance_begin", **asdict(record)})
    return record


async def maintenance_end(node: KitNode, data: Path, status: Any) -> Maintenance:
    """Markets back to the mode they had (those still in the maintenance mode), the status
    maintenance completed, the record closed."""
    record = open_maintenance(data)
    if record is None:
        raise DurabilityError("no maintenance is open", code="NO_MAINTENANCE")
    if record.mode:
        for m, mode in sorted(record.previous.items()):
            if m in node.engine.markets and node.engine.markets[m].mode == record.mode:
                await set_modes(node, [m], mode, f"maintenance {record.name} ended")
    if status is not None and record.status_id:
        try:
            status.operator.complete_maintenance(record.status_id)
        except Exception as exc:  # completed by hand already: the record still closes
            append_jsonl(data / "audit.jsonl", {"event": "maintenance_status", "error": str(exc)})
    append_jsonl(data / "audit.jsonl", {"event": "maintenance_end", "name": record.name,
                                        "ts_ms": int(time.time() * 1000)})
    (data / MAINTENANCE_FILE).unlink()
    return record


@dataclass
class RollbackRequest:
    who: str
    why: str
    to_snapshot: str | None
    to_seq: int | None
    recovery_s: float


def request_rollback(data: Path, req: RollbackRequest) -> None:
    """Recorded before the node stops; the serving loop performs it before restarting."""
    if (req.to_snapshot is None) == (req.to_seq is None):
        raise DurabilityError("give exactly one of to_snapshot or to_seq", code="BAD_ARGUMENT")
    if not req.who.strip() or not req.why.strip():
        raise DurabilityError("a rollback needs who and why", code="BAD_ARGUMENT")
    atomic_write(data / ROLLBACK_REQUEST, json.dumps(asdict(req)).encode())


def perform_pending_rollback(data: Path) -> tuple[Any, float] | None:
    """With the node stopped: carry out a requested rollback (archiving the abandoned tail
    and auditing it, as ``bastion rollback`` does); returns the report and how long the
    markets should stay in recovery when the node reopens. The request file goes only after
    the rollback is done (the rollback's own intent file covers a crash in between)."""
    from bastion.node.rollback import rollback

    path = data / ROLLBACK_REQUEST
    if not path.exists():
        return None
    req = RollbackRequest(**json.loads(path.read_bytes()))
    report = rollback(data, who=req.who, why=req.why, to_snapshot=req.to_snapshot,
                      to_seq=req.to_seq)
    path.unlink()
    return report, req.recovery_s
