"""After-the-fact checks of a stopped deployment, from its files alone: the journal verifies,
a full replay from seq 1 reproduces the served state hash and passes every invariant, and the
liquidations after the fault are counted from the events the replay produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bastion.core import events as E
from bastion.core.codec import decode_command
from bastion.core.engine import Engine
from bastion.journal.local import LocalJournal
from bastion.node.layout import DataDir
from bastion.snapshots.store import SnapshotStore


@dataclass
class Audit:
    records: int
    state_hash: str
    problems: list[str]
    #: accounts liquidated after the fault seq, in the order it happened
    liquidated: list[int] = field(default_factory=list)
    #: the newest snapshot the node wrote, and whether replay reached the same state hash
    snapshot_seq: int = 0
    snapshot_matches: bool = False


def audit(data_dir: Path, fault_seq: int) -> Audit:
    layout = DataDir.at(data_dir).require()
    newest = SnapshotStore(layout.snapshots).entries()
    snap = SnapshotStore(layout.snapshots).header(newest[-1]) if newest else None
    snap_hash = ""
    with LocalJournal(layout.journal, archive_dir=layout.journal_archive,
                      readonly=True) as journal:
        records = journal.verify()
        engine = Engine()
        liquidated: list[int] = []
        if journal.last_seq:
            for seq, payload in journal.read(1, journal.last_seq):
                events = engine.apply(decode_command(payload))
                if snap is not None and seq == snap.seq:
                    snap_hash = engine.state_hash()
                if fault_seq and seq >= fault_seq:
                    liquidated += [e.account for e in events
                                   if isinstance(e, E.LiquidationStarted)]
    found = Audit(records, engine.state_hash(), engine.check_invariants(), liquidated)
    if snap is not None:
        found.snapshot_seq = snap.seq
        found.snapshot_matches = snap_hash == snap.state_hash
    return found
