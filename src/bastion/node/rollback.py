"""Point-in-time rollback: rebuild the state at a snapshot or sequence number, preserve the
abandoned journal tail (and later snapshots) under ``archive/``, continue in a new epoch.

The plan is written to ``ROLLBACK.json`` before anything moves and every step is idempotent, so
a crash at any point is finished by the next node start or operator command. The rollback is
recorded (who, why, from, to) in ``audit.jsonl`` with fsync.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.journal.errors import DurabilityError
from bastion.journal.fsutil import append_jsonl, atomic_write, fsync_dir
from bastion.journal.local import LocalJournal
from bastion.node.layout import DataDir, NodeLock
from bastion.node.recovery import rebuild, snapshot_checker, write_snapshot
from bastion.snapshots.store import SnapshotStore


@dataclass(frozen=True)
class RollbackReport:
    id: str
    who: str
    why: str
    from_seq: int
    from_epoch: int
    to_seq: int
    to_epoch: int
    to_snapshot: str | None
    state_hash: str
    archive: str
    seconds: float

    def summary(self) -> str:
        target = (
            f"snapshot {self.to_snapshot} (seq {self.to_seq},"
            if self.to_snapshot
            else (f"seq {self.to_seq} (")
        )
        return (
            f"rolled back from seq {self.from_seq} (epoch {self.from_epoch}) to {target} "
            f"epoch {self.to_epoch}); abandoned tail in {self.archive}; "
            f"state hash {self.state_hash}; by {self.who}: {self.why}"
        )


def rollback(
    data_dir: str | Path,
    *,
    who: str,
    why: str,
    to_snapshot: str | None = None,
    to_seq: int | None = None,
    progress: bool | None = None,
) -> RollbackReport:
    """Roll the shard in ``data_dir`` back; the node must be stopped (its lock is taken)."""
    if (to_snapshot is None) == (to_seq is None):
        raise DurabilityError("give exactly one of to_snapshot or to_seq", code="BAD_ARGUMENT")
    if not who.strip() or not why.strip():
        raise DurabilityError("a rollback needs --who and --why", code="BAD_ARGUMENT")
    t0 = time.perf_counter()
    data = DataDir.at(data_dir).require()
    lock = NodeLock(data)
    try:
        complete_pending_rollback(data)
        store = SnapshotStore(data.snapshots)
        journal = LocalJournal(data.journal, archive_dir=data.journal_archive)
        try:
            if to_snapshot is not None:
                info = store.find(to_snapshot)
                header, payload = store.read(info)
                reason = snapshot_checker(journal, {})(info, header, payload)
                if reason is not None:
                    raise DurabilityError(
                        f"snapshot {info.id} cannot be rolled back to: {reason}",
                        code="SNAPSHOT_INVALID",
                    )
                target = info.seq
            else:
                assert to_seq is not None
                target = to_seq
            if target < 0 or target > journal.last_seq:
                raise DurabilityError(
                    f"seq {target} is outside the journal (0..{journal.last_seq})",
                    code="SEQ_BEYOND_END",
                )
            if target < journal.archived_through:
                raise DurabilityError(
                    f"seq {target} is before the archived prefix of the journal (through "
                    f"{journal.archived_through}); restore archive/journal segments first",
                    code="ROLLBACK_TOO_OLD",
                )
            engine, _report = rebuild(journal, store, target, progress=progress)
            term = journal.term_at(target)
            now_ms = time.time_ns() // 1_000_000
            from_seq, from_epoch = journal.last_seq, journal.epoch
        finally:
            journal.close()
        rollback_id = f"{now_ms}-e{from_epoch}"
        intent: dict[str, Any] = {
            "event": "rollback",
            "id": rollback_id,
            "who": who,
            "why": why,
            "from_seq": from_seq,
            "from_epoch": from_epoch,
            "to_seq": target,
            "to_epoch": from_epoch + 1,
            "to_snapshot": to_snapshot,
            "state_hash": engine.state_hash(),
            "archive": f"archive/rollback-{rollback_id}",
            "ts_ms": now_ms,
        }
        atomic_write(data.rollback_intent, json.dumps(intent, sort_keys=True).encode())
        _execute(data, intent)
        if not any(i.seq == target for i in store.entries()):
            write_snapshot(store, engine, term=term, created_ms=now_ms)
    finally:
        lock.release()
    return RollbackReport(
        id=rollback_id,
        who=who,
        why=why,
        from_seq=from_seq,
        from_epoch=from_epoch,
        to_seq=target,
        to_epoch=from_epoch + 1,
        to_snapshot=to_snapshot,
        state_hash=intent["state_hash"],
        archive=intent["archive"],
        seconds=time.perf_counter() - t0,
    )


def complete_pending_rollback(data: DataDir) -> bool:
    """Finish a rollback interrupted by a crash (caller holds the node lock)."""
    path = data.rollback_intent
    if not path.exists():
        return False
    try:
        intent = json.loads(path.read_bytes())
        int(intent["to_seq"]), int(intent["to_epoch"]), str(intent["archive"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DurabilityError(
            f"{path} is unreadable ({exc}); inspect it before starting", code="ROLLBACK_INTENT"
        ) from exc
    _execute(data, intent)
    return True


def _execute(data: DataDir, intent: dict[str, Any]) -> None:
    to_seq = int(intent["to_seq"])
    archive = data.root / str(intent["archive"])
    store = SnapshotStore(data.snapshots)
    for info in store.entries():
        if info.seq > to_seq:
            store.move(info, archive / "snapshots")
    journal = LocalJournal(data.journal, archive_dir=data.journal_archive)
    try:
        journal.truncate_after(to_seq, archive / "journal", int(intent["to_epoch"]))
    finally:
        journal.close()
    if not _audited(data.audit, str(intent["id"])):
        append_jsonl(data.audit, intent)
    data.rollback_intent.unlink()
    fsync_dir(data.root)


def _audited(path: Path, rollback_id: str) -> bool:
    if not path.exists():
        return False
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("id") == rollback_id:
                return True
        except ValueError:
            continue
    return False


def audit_log(data_dir: str | Path) -> list[dict[str, Any]]:
    """Every recorded rollback, oldest first."""
    path = DataDir.at(data_dir).audit
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
