"""Where a shard's durable files live under its data directory, and its single-writer lock."""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from bastion.journal.errors import DurabilityError
from bastion.journal.fsutil import ensure_dir


@dataclass(frozen=True)
class DataDir:
    root: Path

    @classmethod
    def at(cls, path: str | os.PathLike[str]) -> DataDir:
        return cls(Path(path))

    @property
    def journal(self) -> Path:
        return self.root / "journal"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def journal_archive(self) -> Path:
        return self.archive / "journal"

    @property
    def audit(self) -> Path:
        return self.root / "audit.jsonl"

    @property
    def rollback_intent(self) -> Path:
        return self.root / "ROLLBACK.json"

    def require(self) -> DataDir:
        """For tools that must not create a data directory by accident (typos)."""
        if not self.root.is_dir():
            raise DurabilityError(f"no data directory at {self.root}", code="NO_DATA_DIR")
        if not self.journal.is_dir():
            raise DurabilityError(f"{self.root} holds no journal/ directory", code="NO_JOURNAL")
        return self


class NodeLock:
    """Exclusive flock on ``<data>/node.lock`` for a node's lifetime: one writer per shard on
    this machine (the journal fence covers writers that bypass it)."""

    def __init__(self, data: DataDir) -> None:
        ensure_dir(data.root)
        path = data.root / "node.lock"
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise DurabilityError(
                f"a node (or an operator tool) is already running on {data.root}",
                code="NODE_RUNNING",
            ) from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
