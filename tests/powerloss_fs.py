"""A power-loss file layer for tests: what a machine's disk holds after the plug is pulled.

Written bytes stay in the real files (they play the page cache, so every read the code makes is
a real read). What is *durable* is recorded apart, at the moment of each sync, in a state
directory outside the simulated tree:

- ``fsync``/``fdatasync`` of a file records its whole current content, keyed by the file's
  identity (inode number plus a generation bumped on every create, so a reused inode is a new
  file);
- ``fsync_dir`` of a directory records its current entries (name -> file identity, or
  subdirectory). A file whose name no synced directory holds does not exist after the cut, even
  if its data was synced; a rename is durable only once a directory holding the new name is
  synced (and then it moves: a file is in one directory at a time).

``arm(k)`` cuts the power at the k-th sync from now: that sync and every later file operation,
in any thread or forked child, raises ``PowerCut`` (an ``OSError`` with EIO, what a dead disk
returns), so nothing after the cut becomes durable. ``restore()`` then replaces the tree by
exactly what was durable: synced content under synced names; a durable name whose data was never
synced is an empty file, and with ``writeback=True`` a random prefix of unsynced appended bytes
is kept too (the kernel may have written some pages back), which is how torn tails arise.

State lives in files and a shared anonymous mmap, under an ``flock`` taken per operation, so the
node's writer thread, its executor threads and its forked snapshot children all record into one
timeline. The code under test only sees ``FileOps``; it does not know it is being tested.
"""

from __future__ import annotations

import errno
import fcntl
import json
import mmap
import os
import random
import shutil
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from bastion.journal.fsutil import FileOps

_SHARED = struct.Struct("<qqqqq")  # syncs since arm, cut at, dead, cut in a child, cut kind
KINDS = ("", "fsync", "fdatasync", "fsync_dir", "open")


class PowerCut(OSError):
    def __init__(self) -> None:
        super().__init__(errno.EIO, "power cut (simulated)")


class PowerLossFS(FileOps):
    def __init__(self, root: Path, state: Path) -> None:
        self.root = root.resolve()
        self.state = state.resolve()
        self.owner = os.getpid()
        self._mem = mmap.mmap(-1, _SHARED.size)  # MAP_SHARED: forked children see one counter
        self.root.mkdir(parents=True, exist_ok=True)
        self._reset_state()

    # --- FileOps -------------------------------------------------------------------------------

    def open(self, path: str | os.PathLike[str], flags: int, mode: int = 0o777) -> int:  # type: ignore[override]
        with self._locked():
            self._check_alive("open")
            existed = os.path.lexists(path)
            fd = os.open(path, flags, mode)
            if flags & os.O_CREAT and not existed:
                ino = os.fstat(fd).st_ino
                self._gen_file(ino).write_text(str(self._gen(ino) + 1))
            return fd

    def fsync(self, fd: int) -> None:  # type: ignore[override]
        self._sync_file(fd, "fsync")

    def fdatasync(self, fd: int) -> None:  # type: ignore[override]
        self._sync_file(fd, "fdatasync")

    def fsync_dir(self, path: Path) -> None:
        with self._locked():
            self._tick("fsync_dir")
            rel = self._rel(Path(path))
            if rel is None:
                return
            listing = self._listing(Path(path))
            moved = {v for v in listing.values() if v != "d"}
            for other in self._dirs.iterdir():
                if other.name == _key(rel):
                    continue
                entries = json.loads(other.read_text())
                kept = {k: v for k, v in entries.items() if v not in moved}
                if kept != entries:
                    _put(other, json.dumps(kept).encode())
            _put(self._dirs / _key(rel), json.dumps(listing).encode())

    # --- control -------------------------------------------------------------------------------

    def arm(self, k: int) -> None:
        """Cut the power at the k-th sync from now (k >= 1)."""
        with self._locked():
            self._store(syncs=0, cut_at=k)

    def cut_now(self) -> None:
        with self._locked():
            if not self._load()[2]:
                self._store(dead=1, kind=0, child=0)

    @property
    def dead(self) -> bool:
        return bool(self._load()[2])

    @property
    def cut_info(self) -> tuple[str, bool]:
        """Which operation the cut hit, and whether a forked child made it."""
        _, _, _, child, kind = self._load()
        return KINDS[kind], bool(child)

    def restore(self, rng: random.Random | None = None) -> None:
        """Replace the tree by what survived the cut, then start a new, unarmed timeline in
        which everything present counts as durable (it is on disk now)."""
        with self._locked():
            fresh = self.root.with_name(self.root.name + ".restoring")
            if fresh.exists():
                shutil.rmtree(fresh)
            current = self._identities() if rng is not None else {}
            self._build(".", fresh, current, rng)
            shutil.rmtree(self.root)
            fresh.rename(self.root)
            self._reset_state()

    # --- internals -----------------------------------------------------------------------------

    @property
    def _files(self) -> Path:
        return self.state / "files"

    @property
    def _dirs(self) -> Path:
        return self.state / "dirs"

    def _reset_state(self) -> None:
        if self.state.exists():
            shutil.rmtree(self.state)
        for sub in ("files", "dirs", "gen"):
            (self.state / sub).mkdir(parents=True)
        self._mem[:] = bytes(_SHARED.size)
        for directory, subdirs, files in os.walk(self.root):
            base = Path(directory)
            rel = self._rel(base)
            assert rel is not None
            _put(self._dirs / _key(rel), json.dumps(self._listing(base)).encode())
            for name in files:
                ident = self._identity(os.stat(base / name).st_ino)
                _put(self._files / ident, (base / name).read_bytes())
            del subdirs  # os.walk recurses by itself

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.state.with_name(self.state.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _load(self) -> tuple[int, int, int, int, int]:
        return _SHARED.unpack(self._mem[: _SHARED.size])

    def _store(self, **changes: int) -> None:
        syncs, cut_at, dead, child, kind = self._load()
        values = {"syncs": syncs, "cut_at": cut_at, "dead": dead, "child": child, "kind": kind}
        values.update(changes)
        self._mem[: _SHARED.size] = _SHARED.pack(
            values["syncs"], values["cut_at"], values["dead"], values["child"], values["kind"]
        )

    def _check_alive(self, kind: str) -> None:
        if self._load()[2]:
            raise PowerCut()

    def _tick(self, kind: str) -> None:
        syncs, cut_at, dead, _, _ = self._load()
        if dead:
            raise PowerCut()
        syncs += 1
        if cut_at and syncs >= cut_at:
            self._store(
                syncs=syncs,
                dead=1,
                child=int(os.getpid() != self.owner),
                kind=KINDS.index(kind),
            )
            raise PowerCut()
        self._store(syncs=syncs)

    def _sync_file(self, fd: int, kind: str) -> None:
        with self._locked():
            self._tick(kind)
            ident = self._identity(os.fstat(fd).st_ino)
            with open(f"/proc/self/fd/{fd}", "rb") as f:
                _put(self._files / ident, f.read())

    def _gen_file(self, ino: int) -> Path:
        return self.state / "gen" / str(ino)

    def _gen(self, ino: int) -> int:
        try:
            return int(self._gen_file(ino).read_text())
        except FileNotFoundError:
            return 0

    def _identity(self, ino: int) -> str:
        return f"{ino}-{self._gen(ino)}"

    def _rel(self, path: Path) -> str | None:
        try:
            return str(path.resolve().relative_to(self.root))
        except ValueError:
            return None

    def _listing(self, path: Path) -> dict[str, str]:
        listing: dict[str, str] = {}
        with os.scandir(path) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    listing[entry.name] = "d"
                elif entry.is_file(follow_symlinks=False):
                    listing[entry.name] = self._identity(entry.inode())
        return listing

    def _identities(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for directory, _subdirs, files in os.walk(self.root):
            for name in files:
                path = Path(directory) / name
                found[self._identity(os.stat(path).st_ino)] = path
        return found

    def _build(
        self, rel: str, into: Path, current: dict[str, Path], rng: random.Random | None
    ) -> None:
        into.mkdir(0o700)
        record = self._dirs / _key(rel)
        entries = json.loads(record.read_text()) if record.exists() else {}
        for name, ident in sorted(entries.items()):
            if ident == "d":
                self._build(os.path.normpath(os.path.join(rel, name)), into / name, current, rng)
                continue
            image = self._files / ident
            data = image.read_bytes() if image.exists() else b""
            live = current.get(ident)
            if rng is not None and live is not None:
                now = live.read_bytes()
                if len(now) > len(data) and now.startswith(data):
                    data = now[: len(data) + rng.randrange(len(now) - len(data) + 1)]
            (into / name).write_bytes(data)
            (into / name).chmod(0o600)


def _key(rel: str) -> str:
    return quote(rel, safe="") + ".json"


def _put(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
