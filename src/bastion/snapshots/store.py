"""A directory of snapshot files named ``<seq>-<name>.snap``; ``auto`` ones are rotated by
retention, named ones (``pre-maintenance``) are kept until an operator removes them."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bastion.journal.errors import DurabilityError
from bastion.journal.fsutil import (
    FILE_MODE,
    PLAIN,
    FileOps,
    ensure_dir,
    fsync_dir,
    move_durable,
    write_all,
)
from bastion.snapshots.format import (
    FORMAT_VERSION,
    MAX_HEADER,
    PREFIX_SIZE,
    SnapshotCorruptError,
    SnapshotHeader,
    check_payload,
    decode_header,
    encode,
    payload_crc,
)

log = logging.getLogger("bastion.snapshots")

AUTO = "auto"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_FILE = re.compile(r"^(\d{20})-([a-z0-9][a-z0-9._-]{0,63})\.snap$")
TMP_MARK = ".snap.tmp-"


@dataclass(frozen=True)
class SnapshotInfo:
    path: Path
    seq: int
    name: str

    @property
    def id(self) -> str:
        return self.path.name.removesuffix(".snap")

    @property
    def named(self) -> bool:
        return self.name != AUTO


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise DurabilityError(
            f"snapshot name {name!r} is invalid: use 1-64 of a-z 0-9 . _ - "
            "(starting with a letter or digit)",
            code="BAD_SNAPSHOT_NAME",
        )
    return name


class SnapshotStore:
    def __init__(self, directory: str | os.PathLike[str], *, fs: FileOps = PLAIN) -> None:
        self.directory = Path(directory)
        self._fs = fs

    def entries(self) -> list[SnapshotInfo]:
        """All snapshot files, oldest first (cheap: from names only)."""
        found: list[SnapshotInfo] = []
        if not self.directory.is_dir():
            return found
        for entry in os.scandir(self.directory):
            m = _FILE.match(entry.name)
            if m:
                found.append(SnapshotInfo(Path(entry.path), int(m.group(1)), m.group(2)))
        found.sort(key=lambda i: (i.seq, i.named, i.name))
        return found

    def write(
        self,
        *,
        seq: int,
        term: int,
        state_hash: str,
        payload: bytes,
        created_ms: int,
        name: str = AUTO,
    ) -> SnapshotInfo:
        """Write atomically (tmp file, fsync, rename, fsync dir): a crash leaves no half file
        under a real name. Safe to call in a forked child: no locks, no threads."""
        check_name(name)
        if name != AUTO:
            for other in self.entries():
                if other.name == name and other.seq != seq:
                    raise DurabilityError(
                        f"a snapshot named {name!r} already exists ({other.id})",
                        code="SNAPSHOT_EXISTS",
                    )
        ensure_dir(self.directory, self._fs)
        header = SnapshotHeader(
            format_version=FORMAT_VERSION,
            seq=seq,
            term=term,
            state_hash=state_hash,
            payload_len=len(payload),
            payload_crc32c=payload_crc(payload),
            name=name,
            created_ms=created_ms,
        )
        path = self.directory / f"{seq:020d}-{name}.snap"
        tmp = path.with_name(f"{path.name.removesuffix('.snap')}{TMP_MARK}{os.getpid()}")
        fd = self._fs.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            write_all(fd, encode(header))
            write_all(fd, payload)
            self._fs.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(self.directory, self._fs)
        return SnapshotInfo(path, seq, name)

    def read(self, info: SnapshotInfo) -> tuple[SnapshotHeader, bytes]:
        """Header and payload, every checksum verified (the state hash is the caller's job:
        only the engine can recompute it)."""
        try:
            blob = info.path.read_bytes()
        except FileNotFoundError:
            raise DurabilityError(f"snapshot {info.id} is gone", code="UNKNOWN_SNAPSHOT") from None
        header, offset = decode_header(blob, info.path.name)
        if header.seq != info.seq or header.name != info.name:
            raise SnapshotCorruptError(
                f"{info.path.name}: header says seq {header.seq} name {header.name!r}"
            )
        body = blob[offset:]
        check_payload(header, body, info.path.name)
        return header, body

    def header(self, info: SnapshotInfo) -> SnapshotHeader:
        """Header only (cheap listing); the payload is not checked."""
        try:
            with open(info.path, "rb") as f:
                blob = f.read(PREFIX_SIZE + MAX_HEADER)
        except FileNotFoundError:
            raise DurabilityError(f"snapshot {info.id} is gone", code="UNKNOWN_SNAPSHOT") from None
        return decode_header(blob, info.path.name)[0]

    def find(self, ref: str) -> SnapshotInfo:
        """Look up by name (``pre-maintenance``), id (``<seq>-<name>``) or file name."""
        matches = [i for i in self.entries() if ref in (i.name, i.id, i.path.name)]
        if not matches:
            known = ", ".join(i.id for i in self.entries()) or "none"
            raise DurabilityError(
                f"no snapshot {ref!r} in {self.directory} (known: {known})",
                code="UNKNOWN_SNAPSHOT",
            )
        return matches[-1]

    def newest_valid(
        self,
        *,
        max_seq: int | None = None,
        accept: Callable[[SnapshotInfo, SnapshotHeader, bytes], str | None] | None = None,
    ) -> tuple[SnapshotInfo, SnapshotHeader, bytes] | None:
        """Newest snapshot that passes its checksums and ``accept`` (which returns a reason to
        reject, e.g. a hash or timeline mismatch); damaged ones are skipped with a warning."""
        for info in reversed(self.entries()):
            if max_seq is not None and info.seq > max_seq:
                continue
            try:
                header, payload = self.read(info)
                reason = accept(info, header, payload) if accept else None
            except DurabilityError as exc:
                reason = str(exc)
            if reason is None:
                return info, header, payload
            log.warning("skipping snapshot %s: %s", info.id, reason)
        return None

    def retain(self, keep_last: int) -> list[SnapshotInfo]:
        """Delete ``auto`` snapshots beyond the newest ``keep_last``; named ones always stay."""
        autos = [i for i in self.entries() if not i.named]
        doomed = autos[: max(0, len(autos) - max(1, keep_last))]
        for info in doomed:
            info.path.unlink(missing_ok=True)
        if doomed:
            fsync_dir(self.directory, self._fs)
        return doomed

    def move(self, info: SnapshotInfo, into: Path) -> Path:
        return move_durable(info.path, into, self._fs)

    def cleanup_tmp(self) -> int:
        """Remove half-written files of snapshot writers that died (never a finished snapshot)."""
        removed = 0
        if not self.directory.is_dir():
            return removed
        for entry in os.scandir(self.directory):
            if TMP_MARK in entry.name:
                pid = entry.name.rsplit("-", 1)[-1]
                if pid.isdigit() and _alive(int(pid)):
                    continue
                os.unlink(entry.path)
                removed += 1
        return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
