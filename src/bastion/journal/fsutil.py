"""Small durable-filesystem helpers shared by the journal, snapshots and rollback.

Files are created 0600 and directories 0700: the journal and snapshots hold every account's
orders and balances, so no other local user may read them (``umask`` can only tighten this).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bastion.journal.errors import DurabilityError

FILE_MODE = 0o600
DIR_MODE = 0o700


class FileOps:
    """The calls that decide what survives a power loss: creating a file, syncing its data,
    syncing a directory's entries. The journal and the snapshot store take one of these;
    production uses ``PLAIN`` (the bare ``os`` functions, no wrapper frame), the power-loss test
    passes a layer that keeps written bytes apart from synced ones."""

    open = staticmethod(os.open)
    fsync = staticmethod(os.fsync)
    fdatasync = staticmethod(os.fdatasync)

    def fsync_dir(self, path: Path) -> None:
        """Make renames/creations inside ``path`` durable (a file's fsync does not cover its
        name)."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


PLAIN = FileOps()


def fsync_dir(path: Path, fs: FileOps = PLAIN) -> None:
    """The one name every caller syncs a directory through (the crash test stops a process
    here to catch a rename that is not yet durable)."""
    fs.fsync_dir(path)


def ensure_dir(path: Path, fs: FileOps = PLAIN) -> None:
    """Create ``path`` (and parents, each 0700) so that the new directory entries survive a
    crash."""
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for created in reversed(missing):
        try:
            created.mkdir(DIR_MODE)
        except FileExistsError:
            if not created.is_dir():
                raise
        fs.fsync_dir(created.parent)


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def atomic_write(path: Path, data: bytes, fs: FileOps = PLAIN) -> None:
    """Replace ``path`` with ``data`` so a crash leaves either the old or the new file, whole."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = fs.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        write_all(fd, data)
        fs.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fs.fsync_dir(path.parent)


def copy_durable(src: Path, dst: Path, fs: FileOps = PLAIN) -> None:
    """Copy ``src`` to ``dst`` atomically and durably (used to preserve data before cutting it)."""
    with open(src, "rb") as f:
        atomic_write(dst, f.read(), fs)


def move_durable(src: Path, dst_dir: Path, fs: FileOps = PLAIN) -> Path:
    """Move a file into ``dst_dir`` without ever overwriting or deleting anything."""
    ensure_dir(dst_dir, fs)
    dst = dst_dir / src.name
    if dst.exists():
        raise DurabilityError(
            f"cannot move {src} into {dst_dir}: {dst.name} already exists there",
            code="ARCHIVE_CONFLICT",
        )
    os.rename(src, dst)
    fs.fsync_dir(dst_dir)
    fs.fsync_dir(src.parent)
    return dst


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync it: the audit trail must survive the next crash."""
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    existed = path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    try:
        write_all(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    if not existed:
        fsync_dir(path.parent)
