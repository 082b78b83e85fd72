"""Durable status state in SQLite (stdlib), one fsynced transaction per change.

SQLite rather than a JSON-lines log: incidents and components are updated in place, uptime
needs range queries over history by component and time, and a status change plus the incident
it opens must land atomically. WAL with `synchronous=FULL` fsyncs every commit, so a change the
API has acknowledged survives a crash or power loss.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from bastion.journal.fsutil import ensure_dir
from bastion.status.model import Component, Group, Incident, Subscriber

SCHEMA = """
CREATE TABLE IF NOT EXISTS groups(id TEXT PRIMARY KEY, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS components(id TEXT PRIMARY KEY, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS incidents(id TEXT PRIMARY KEY, kind TEXT NOT NULL,
    created_ms INTEGER NOT NULL, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS subscribers(id TEXT PRIMARY KEY, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS signals(key TEXT PRIMARY KEY, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS history(seq INTEGER PRIMARY KEY AUTOINCREMENT,
    component_id TEXT NOT NULL, ts_ms INTEGER NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS history_by_component ON history(component_id, ts_ms, seq);
"""

_enc = msgspec.json.Encoder()


@dataclass
class Loaded:
    groups: list[Group] = field(default_factory=list)
    components: list[Component] = field(default_factory=list)
    incidents: list[Incident] = field(default_factory=list)
    subscribers: list[Subscriber] = field(default_factory=list)
    signals: dict[str, Any] = field(default_factory=dict)


def _private(db: Path) -> None:
    """The database and its WAL/shared-memory files 0600 in a 0700 directory: operator
    notes and webhook secrets are for this user only (SQLite gives the side files the
    database file's mode, so creating it 0600 first is enough for new ones)."""
    ensure_dir(db.parent)
    os.chmod(db.parent, 0o700)
    os.close(os.open(db, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (db.name, db.name + "-wal", db.name + "-shm"):
        side = db.with_name(name)
        if side.exists():
            os.chmod(side, 0o600)


class Store:
    """Thread-safe SQLite wrapper; callers group writes with `transaction()`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            _private(self.path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._depth = 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside commit together (nested calls join the outer transaction)."""
        with self._lock:
            if self._depth == 0:
                self._db.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    self._db.execute("ROLLBACK")
                raise
            self._depth -= 1
            if self._depth == 0:
                self._db.execute("COMMIT")

    def load(self) -> Loaded:
        with self._lock:
            rows = self._db.execute
            return Loaded(
                groups=[
                    msgspec.json.decode(d, type=Group) for (d,) in rows("SELECT doc FROM groups")
                ],
                components=[
                    msgspec.json.decode(d, type=Component)
                    for (d,) in rows("SELECT doc FROM components")
                ],
                incidents=[
                    msgspec.json.decode(d, type=Incident)
                    for (d,) in rows("SELECT doc FROM incidents ORDER BY created_ms, id")
                ],
                subscribers=[
                    msgspec.json.decode(d, type=Subscriber)
                    for (d,) in rows("SELECT doc FROM subscribers")
                ],
                signals={
                    k: msgspec.json.decode(d) for k, d in rows("SELECT key, doc FROM signals")
                },
            )

    def _put(self, table: str, key: str, doc: object) -> None:
        with self.transaction():
            self._db.execute(
                f"INSERT OR REPLACE INTO {table}(id, doc) VALUES (?, ?)", (key, _enc.encode(doc))
            )

    def put_group(self, g: Group) -> None:
        self._put("groups", g.id, g)

    def put_component(self, c: Component) -> None:
        self._put("components", c.id, c)

    def put_subscriber(self, s: Subscriber) -> None:
        self._put("subscribers", s.id, s)

    def delete_subscriber(self, sub_id: str) -> None:
        with self.transaction():
            self._db.execute("DELETE FROM subscribers WHERE id = ?", (sub_id,))

    def put_incident(self, i: Incident) -> None:
        with self.transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO incidents(id, kind, created_ms, doc) VALUES (?, ?, ?, ?)",
                (i.id, i.kind, i.created_ms, _enc.encode(i)),
            )

    def delete_incident(self, incident_id: str) -> None:
        with self.transaction():
            self._db.execute("DELETE FROM incidents WHERE id = ?", (incident_id,))

    def put_signal(self, key: str, value: object) -> None:
        with self.transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO signals(key, doc) VALUES (?, ?)", (key, _enc.encode(value))
            )

    def record_status(self, component_id: str, ts_ms: int, status: str, reason: str) -> None:
        with self.transaction():
            self._db.execute(
                "INSERT INTO history(component_id, ts_ms, status, reason) VALUES (?, ?, ?, ?)",
                (component_id, ts_ms, status, reason),
            )

    def record_status_once(self, component_id: str, ts_ms: int, status: str,
                           reason: str) -> bool:
        """`record_status` unless that transition is already there (one shared by gateways)."""
        with self.transaction():
            if self._db.execute(
                "SELECT 1 FROM history WHERE component_id = ? AND ts_ms = ? AND status = ?",
                (component_id, ts_ms, status),
            ).fetchone():
                return False
            self.record_status(component_id, ts_ms, status, reason)
            return True

    def history_since(self, since_ms: int) -> list[tuple[str, int, str, str]]:
        """Every transition from `since_ms` on: `(component id, ts_ms, status, reason)`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT component_id, ts_ms, status, reason FROM history WHERE ts_ms >= ? ORDER BY seq",
                (since_ms,),
            ).fetchall()
        return [(str(c), int(t), str(s), str(r)) for c, t, s, r in rows]

    def history(
        self, component_id: str, since_ms: int, until_ms: int
    ) -> tuple[str | None, list[tuple[int, str]]]:
        """Status in force at `since_ms` (None if the component did not exist) and changes after."""
        with self._lock:
            before = self._db.execute(
                "SELECT status FROM history WHERE component_id = ? AND ts_ms <= ? ORDER BY ts_ms DESC, seq DESC LIMIT 1",
                (component_id, since_ms),
            ).fetchone()
            changes = self._db.execute(
                "SELECT ts_ms, status FROM history WHERE component_id = ? AND ts_ms > ? AND ts_ms < ? ORDER BY ts_ms, seq",
                (component_id, since_ms, until_ms),
            ).fetchall()
        return (before[0] if before else None), [(int(t), str(s)) for t, s in changes]
