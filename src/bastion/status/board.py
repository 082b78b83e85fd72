"""The status page's shared state: components, groups and incidents in memory, written through
to SQLite in transactions whose changes reach listeners only after they commit.

The tracker (derived status), the operator desk and the subscriber list all write through one
board, so they share one lock and one transaction without inheriting from each other.
Thread-safe: the node may report from an engine thread while HTTP reads and operator writes run
on the event loop.

In a cluster the records an operator writes (incidents, overrides, custom components and groups,
subscribers: `shared.KINDS`) are shared by every gateway: a verb `mark`s what it wrote, runs as
a `dry_run` (rolled back, its records captured), `writer` stores the records in the cluster's
bucket without holding the lock and only then applies them here, as every other gateway does
(`StatusService.write`). If the bucket does not take them, nothing changed here. Status
transitions go to `history_sink` once committed.
"""

from __future__ import annotations

import copy
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from bastion.status.errors import StatusError
from bastion.status.model import (
    Change,
    Component,
    ComponentKind,
    Group,
    Incident,
    Override,
    Subscriber,
)
from bastion.status.store import Loaded, Store

log = logging.getLogger("bastion.status")

Clock = Callable[[], int]
Listener = Callable[[Change], None]
#: stores `(key, record)` pairs (None: removed) where the other gateways see them and applies
#: them here (`shared.apply_record`), or raises having applied none of them here
Writer = Callable[[list[tuple[str, bytes | None]]], None]
#: `(component id, ts_ms, status, reason)` of a committed status transition
HistorySink = Callable[[str, int, str, str], None]
_enc = msgspec.json.Encoder()

BUILTIN_GROUPS = (("markets", "Markets"), ("apis", "APIs"), ("wallets", "Deposits & withdrawals"))
BUILTIN_COMPONENTS: tuple[tuple[str, str, ComponentKind, str], ...] = (
    ("rest-api", "REST API", "rest_api", "Orders, accounts and market data over HTTP"),
    ("ws-api", "WebSocket API", "ws_api", "Streaming orders, fills and market data"),
    ("market-data", "Market data", "market_data", "Order books, trades and prices"),
)


class _DryRun(Exception):
    """Rolls back a transaction whose shared records go to the cluster first."""


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def new_id() -> str:
    return secrets.token_hex(6)


class StatusBoard:
    """Registries, the store, the lock, and changes released after commit."""

    def __init__(
        self,
        db_path: str | Path,
        *,
        page_name: str = "Bastion",
        page_url: str = "",
        clock: Clock = wall_clock_ms,
    ) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.store = Store(db_path)
        self.loaded: Loaded = self.store.load()
        self.groups: dict[str, Group] = {}
        self.components: dict[str, Component] = {}
        self.incidents: dict[str, Incident] = {}
        self.subscribers: dict[str, Subscriber] = {}
        self._install(self.loaded)
        page = self.loaded.signals.get("page") or {"id": new_id()}
        self.page = {"id": page["id"], "name": page_name, "url": page_url.rstrip("/")}
        self._listeners: list[Listener] = []
        self._pending: list[Change] = []
        self._depth = 0
        self.writer: Writer | None = None
        self.history_sink: HistorySink | None = None
        self._dirty: dict[str, None] = {}
        self._history: list[tuple[str, int, str, str]] = []
        self._applying = 0
        self._capture: list[tuple[str, bytes | None]] | None = None
        with self.tx():
            if "page" not in self.loaded.signals:
                self.store.put_signal("page", {"id": self.page["id"]})
            now = self.clock()
            for pos, (gid, name) in enumerate(BUILTIN_GROUPS):
                if gid not in self.groups:
                    self.add_group(gid, name, pos, now)
            for cid, name, kind, desc in BUILTIN_COMPONENTS:
                if cid not in self.components:
                    self.add_component(cid, name, kind, cid, "apis", desc, now)

    def close(self) -> None:
        self.store.close()

    def _install(self, loaded: Loaded) -> None:
        self.groups = {g.id: g for g in loaded.groups}
        self.components = {c.id: c for c in loaded.components}
        self.incidents = {i.id: i for i in loaded.incidents}
        self.subscribers = {s.id: s for s in loaded.subscribers}

    # ---------------------------------------------------------------- shared records

    def mark(self, kind: str, record_id: str) -> None:
        """The operator wrote this record (`shared.KINDS`): share it when the transaction commits
        (records arriving from other gateways are not shared again)."""
        if not self._applying:
            self._dirty[f"{kind}.{record_id}"] = None

    @contextmanager
    def applying(self) -> Iterator[None]:
        """Records written inside come from the other gateways: they are not shared again."""
        with self.lock:
            self._applying += 1
            try:
                yield
            finally:
                self._applying -= 1

    def record(self, key: str) -> bytes | None:
        """The shared form of record `key` as this gateway holds it (None: it has none).
        Counters and derived fields are left out: they are this gateway's own."""
        kind, _, rid = key.partition(".")
        doc: object = None
        if kind == "incident":
            doc = self.incidents.get(rid)
        elif kind == "override":
            c = self.components.get(rid)
            if c is not None:
                doc = Override(status=c.operator_status, note=c.operator_note, at_ms=c.operator_ms)
        elif kind == "component":
            c = self.components.get(rid)
            if c is not None and c.kind == "custom":
                doc = msgspec.structs.replace(
                    c, status="operational", derived="operational", derived_reason="",
                    operator_status="operational", operator_note="", operator_ms=0,
                    updated_ms=c.created_ms)
        elif kind == "group":
            doc = self.groups.get(rid)
        elif kind == "subscriber":
            sub = self.subscribers.get(rid)
            if sub is not None:
                doc = msgspec.structs.replace(sub, delivered=0, failed_attempts=0)
        return None if doc is None else _enc.encode(doc)

    def record_status(self, component_id: str, ts_ms: int, status: str, reason: str) -> None:
        """A status transition into the history (shared through `history_sink` once committed)."""
        self.store.record_status(component_id, ts_ms, status, reason)
        self._history.append((component_id, ts_ms, status, reason))

    # ---------------------------------------------------------------- changes

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(change)` for every committed change; it must not block. Returns an
        unsubscriber."""
        with self.lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self.lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    @contextmanager
    def tx(self) -> Iterator[None]:
        """Lock, one durable transaction, and changes released only after it commits."""
        with self.lock:
            outer = self._depth == 0
            self._depth += 1
            dry_run = False
            try:
                try:
                    with self.store.transaction():
                        yield
                        if outer and self._dirty and self._capture is not None:
                            self._capture.extend((key, self.record(key)) for key in self._dirty)
                            raise _DryRun
                except _DryRun:
                    dry_run = True
            except BaseException:
                if outer:
                    self._rolled_back()
                raise
            finally:
                self._depth -= 1
                if outer and not dry_run:
                    self._dirty.clear()
            if dry_run:
                self._rolled_back()
                return
            if outer:
                history, self._history = self._history, []
                if self.history_sink is not None:
                    for row in history:
                        try:
                            self.history_sink(*row)
                        except Exception:
                            log.exception("status history sink failed")
                changes, self._pending = self._pending, []
                for change in changes:
                    for listener in list(self._listeners):
                        try:
                            listener(change)
                        except Exception:
                            log.exception("status listener failed on %s", change.kind)

    def _rolled_back(self) -> None:
        self._pending.clear()
        self._history.clear()
        if self._dirty:  # memory back to what the store committed
            self._dirty.clear()
            self._install(self.store.load())

    @contextmanager
    def dry_run(self) -> Iterator[list[tuple[str, bytes | None]]]:
        """Transactions inside that change shared records roll back and leave those records,
        as they would have been, in the yielded list (to store them in the cluster first)."""
        with self.lock:
            self._capture = []
            try:
                yield self._capture
            finally:
                self._capture = None

    def emit(self, *changes: Change) -> None:
        self._pending.extend(changes)

    def component_change(self, kind: str, c: Component, old_status: str = "") -> Change:
        return Change(id=new_id(), kind=kind, at_ms=self.clock(), component_ids=[c.id],
                      component=copy.deepcopy(c), old_status=old_status)

    def incident_change(self, kind: str, inc: Incident) -> Change:
        """An incident or maintenance change, with the components it names as they are now."""
        return Change(
            id=new_id(), kind=kind, at_ms=self.clock(),
            component_ids=sorted(set(inc.component_ids)), incident=copy.deepcopy(inc),
            components={c: copy.deepcopy(self.components[c]) for c in inc.component_ids
                        if c in self.components},
        )

    # ---------------------------------------------------------------- registries

    def add_group(self, gid: str, name: str, position: int, now: int) -> Group:
        g = Group(id=gid, name=name, position=position, created_ms=now)
        self.groups[gid] = g
        self.store.put_group(g)
        return g

    def add_component(
        self,
        cid: str,
        name: str,
        kind: ComponentKind,
        key: str,
        group_id: str | None,
        desc: str,
        now: int,
    ) -> Component:
        position = 1 + max(
            (c.position for c in self.components.values() if c.group_id == group_id), default=0
        )
        c = Component(id=cid, name=name, kind=kind, key=key, group_id=group_id,
                      position=position, description=desc, created_ms=now, updated_ms=now)
        self.components[cid] = c
        self.store.put_component(c)
        self.record_status(cid, now, "operational", "created")
        return c

    def keyed(self, kind: ComponentKind, key: str) -> Component | None:
        return next((c for c in self.components.values() if c.kind == kind and c.key == key), None)

    def free_id(self, base: str) -> str:
        cid, n = base, 2
        while cid in self.components:
            cid, n = f"{base}-{n}", n + 1
        return cid

    def component_ids(self, ids: Iterable[str]) -> list[str]:
        """`ids` de-duplicated in order; unknown ones are refused."""
        ids = list(ids)
        unknown = [i for i in ids if i not in self.components]
        if unknown:
            raise StatusError(
                "unknown_component", f"unknown component id(s): {', '.join(unknown)}", 422
            )
        return list(dict.fromkeys(ids))

    def item(self, kind: str, item_id: str) -> Incident:
        """The incident or maintenance `item_id`, or a 404 naming the kind."""
        item = self.incidents.get(item_id)
        if item is None or item.kind != kind:
            raise StatusError(f"{kind}_not_found", f"no {kind} with id {item_id!r}", 404)
        return item
