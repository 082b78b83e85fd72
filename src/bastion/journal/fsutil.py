"""Small durable-filesystem helpers shared by the journal, snapshots and rollback."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bastion.journal.errors import DurabilityError


def fsync_dir(path: Path) -> None:
    """Make renames/creations inside ``path`` durable (a file's fsync does not cover its name)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path: Path) -> None:
    """Create ``path`` (and parents) so that the new directory entries survive a crash."""
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    if not missing:
        return
    path.mkdir(parents=True, exist_ok=True)
    for created in missing:
        fsync_dir(created.parent)


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a crash leaves either the old or the new file, whole."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def copy_durable(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` atomically and durably (used to preserve data before cutting it)."""
    with open(src, "rb") as f:
        atomic_write(dst, f.read())


def move_durable(src: Path, dst_dir: Path) -> Path:
    """Move a file into ``dst_dir`` without ever overwriting or deleting anything."""
    ensure_dir(dst_dir)
    dst = dst_dir / src.name
    if dst.exists():
        raise DurabilityError(
            f"cannot move {src} into {dst_dir}: {dst.name} already exists there",
            code="ARCHIVE_CONFLICT",
        )
    os.rename(src, dst)
    fsync_dir(dst_dir)
    fsync_dir(src.parent)
    return dst


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync it: the audit trail must survive the next crash."""
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    existed = path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        write_all(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    if not existed:
        fsync_dir(path.parent)
