"""Rebuilding engine state: newest valid snapshot at or below a sequence, then journal replay.

Startup, replay-to-a-point, rollback and the crash test all go through ``rebuild`` so there is
exactly one definition of "the state at seq N".
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bastion.core import events as E
from bastion.core.codec import decode_command, decode_state, encode_state
from bastion.core.engine import Engine
from bastion.journal.base import Journal
from bastion.journal.errors import DurabilityError
from bastion.snapshots.format import SnapshotHeader
from bastion.snapshots.store import AUTO, SnapshotInfo, SnapshotStore

log = logging.getLogger("bastion.node")

PROGRESS_STEP = 8192


@dataclass(frozen=True)
class RecoveryReport:
    snapshot: str | None
    snapshot_seq: int
    replayed: int
    last_seq: int
    epoch: int
    state_hash: str
    seconds: float
    snapshot_seconds: float
    replay_seconds: float
    #: the journal's term at ``snapshot_seq`` (checked against it; 0 without a snapshot)
    snapshot_term: int = 0

    def summary(self) -> str:
        source = f"snapshot {self.snapshot}" if self.snapshot else "an empty state"
        return (
            f"recovered seq {self.last_seq} (epoch {self.epoch}) from {source} + "
            f"{self.replayed} journaled commands in {self.seconds:.3f} s "
            f"(snapshot {self.snapshot_seconds:.3f} s, replay {self.replay_seconds:.3f} s)"
        )


SnapshotAcceptor = Callable[[SnapshotInfo, SnapshotHeader, bytes], str | None]
#: what a replayed command produced, for a reader that follows recovery (``rebuild``'s ``sink``)
EventSink = Callable[[list[E.Event]], None]


class Follower(NamedTuple):
    """A reader following recovery: ``on_events`` gets the events of each replayed command
    after seq ``after`` (a reader restored from its own checkpoint needs none before it, and
    the replay then calls nothing for them)."""

    after: int
    on_events: EventSink


RecoverySink = Callable[[Engine], Follower | None]


class ReplayError(DurabilityError):
    code = "REPLAY_MISMATCH"


def snapshot_checker(journal: Journal, loaded: dict[str, Engine]) -> SnapshotAcceptor:
    """Accept a snapshot only if it belongs to this journal's timeline and its state hashes to
    what was recorded; the rebuilt engine is kept in ``loaded`` so it is decoded only once."""

    def accept(info: SnapshotInfo, header: SnapshotHeader, payload: bytes) -> str | None:
        if header.seq > journal.last_seq:
            return f"it is at seq {header.seq} but the journal ends at {journal.last_seq}"
        term = journal.term_at(header.seq)
        if term != header.term:
            return (
                f"it belongs to another timeline: term {header.term} at seq {header.seq}, "
                f"the journal has term {term} there"
            )
        try:
            engine = Engine.from_state(decode_state(payload), copy=False)
        except Exception as exc:  # any damage that passed the checksums: skip, never crash
            return f"its state does not decode ({type(exc).__name__}: {exc})"
        if engine.seq != header.seq:
            return f"its state is at seq {engine.seq}, header says {header.seq}"
        actual = engine.state_hash()
        if actual != header.state_hash:
            return f"state hash mismatch: recorded {header.state_hash}, rebuilt {actual}"
        loaded[info.id] = engine
        return None

    return accept


def _want_progress(flag: bool | None) -> bool:
    return sys.stderr.isatty() if flag is None else flag


def replay(
    journal: Journal,
    engine: Engine,
    to_seq: int,
    *,
    progress: bool | None = None,
    label: str = "replaying journal",
    on_events: EventSink | None = None,
    events_after: int = 0,
) -> int:
    """Apply records ``engine.seq+1 .. to_seq``; every record must carry its own seq.
    ``on_events`` gets the events of the records after ``events_after``."""
    start = engine.seq + 1
    if to_seq < engine.seq:
        raise DurabilityError(
            f"cannot replay back to seq {to_seq} from seq {engine.seq}", code="BAD_RANGE"
        )
    if to_seq > journal.last_seq:
        raise DurabilityError(
            f"seq {to_seq} is beyond the end of the journal ({journal.last_seq})",
            code="SEQ_BEYOND_END",
        )
    total = to_seq - engine.seq
    if total == 0:
        return 0
    apply = engine.apply
    count = 0
    bar: Progress | None = None
    task = None
    if _want_progress(progress):
        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        bar.start()
        task = bar.add_task(label, total=total)
    try:
        for seq, payload in journal.read(start, to_seq):
            try:
                cmd = decode_command(payload)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise ReplayError(f"record {seq} does not decode as a command: {exc}") from exc
            if cmd.seq != seq:
                raise ReplayError(f"record {seq} holds a command stamped seq {cmd.seq}")
            events = apply(cmd)
            if on_events is not None and seq > events_after:
                on_events(events)
            if engine.seq != seq:
                raise ReplayError(f"engine refused to advance to seq {seq} (at {engine.seq})")
            count += 1
            if bar is not None and task is not None and count % PROGRESS_STEP == 0:
                bar.update(task, completed=count)
    finally:
        if bar is not None and task is not None:
            bar.update(task, completed=count)
            bar.stop()
    if count != total:
        raise ReplayError(f"expected {total} records from seq {start}, journal gave {count}")
    return count


def rebuild(
    journal: Journal,
    store: SnapshotStore,
    to_seq: int | None = None,
    *,
    progress: bool | None = None,
    sink: RecoverySink | None = None,
) -> tuple[Engine, RecoveryReport]:
    """Engine state at ``to_seq`` (default: the journal's end), from the newest valid snapshot
    at or below it plus replay; damaged or foreign snapshots are skipped with a warning.
    ``sink(engine at the snapshot)`` may return a ``Follower`` that receives the replayed
    commands' events (a read model following the tail instead of replaying it again)."""
    t0 = time.perf_counter()
    target = journal.last_seq if to_seq is None else to_seq
    if target < 0 or target > journal.last_seq:
        raise DurabilityError(
            f"seq {target} is outside the journal (0..{journal.last_seq})", code="SEQ_BEYOND_END"
        )
    loaded: dict[str, Engine] = {}
    found = store.newest_valid(max_seq=target, accept=snapshot_checker(journal, loaded))
    if found is None:
        engine = Engine()
        snap_id = None
    else:
        engine = loaded[found[0].id]
        snap_id = found[0].id
    t1 = time.perf_counter()
    base = engine.seq
    follower = sink(engine) if sink is not None else None
    if follower is None:
        replayed = replay(journal, engine, target, progress=progress)
    else:
        replayed = replay(journal, engine, target, progress=progress,
                          on_events=follower.on_events, events_after=follower.after)
    t2 = time.perf_counter()
    report = RecoveryReport(
        snapshot=snap_id,
        snapshot_seq=base,
        replayed=replayed,
        last_seq=engine.seq,
        epoch=journal.epoch,
        state_hash=engine.state_hash(),
        seconds=t2 - t0,
        snapshot_seconds=t1 - t0,
        replay_seconds=t2 - t1,
        snapshot_term=found[1].term if found is not None else 0,
    )
    return engine, report


def adopted(engine: Engine, epoch: int) -> RecoveryReport:
    """The report for state handed over already rebuilt (a promoted cluster standby)."""
    return RecoveryReport(
        snapshot=None,
        snapshot_seq=engine.seq,
        replayed=0,
        last_seq=engine.seq,
        epoch=epoch,
        state_hash="",
        seconds=0.0,
        snapshot_seconds=0.0,
        replay_seconds=0.0,
    )


def write_snapshot(
    store: SnapshotStore,
    engine: Engine,
    *,
    term: int,
    created_ms: int,
    name: str = AUTO,
) -> SnapshotInfo:
    """Encode and durably store the engine's state at its current seq."""
    payload = encode_state(engine.export_state())
    return store.write(
        seq=engine.seq,
        term=term,
        state_hash=engine.state_hash(),
        payload=payload,
        created_ms=created_ms,
        name=name,
    )
