"""Snapshots: engine state at a sequence number, verified by checksum and state hash."""

from bastion.snapshots.format import SnapshotCorruptError, SnapshotHeader
from bastion.snapshots.store import AUTO, SnapshotInfo, SnapshotStore, check_name

__all__ = [
    "AUTO",
    "SnapshotCorruptError",
    "SnapshotHeader",
    "SnapshotInfo",
    "SnapshotStore",
    "check_name",
]
