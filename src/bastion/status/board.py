"""The status page's shared state: components, groups and incidents in memory, written through
to SQLite in transactions whose changes reach listeners only after they commit.

The tracker (derived status), the operator desk and the subscriber list all write through one
board, so they share one lock and one transaction without inheriting from each other.
Thread-safe: the node may report from an engine thread while HTTP reads and operator writes run
on the event loop.
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

from bastion.status.errors import StatusError
from bastion.status.model import Change, Component, ComponentKind, Group, Incident
from bastion.status.store import Loaded, Store

log = logging.getLogger("bastion.status")

Clock = Callable[[], int]
Listener = Callable[[Change], None]

BUILTIN_GROUPS = (("markets", "Markets"), ("apis", "APIs"), ("wallets", "Deposits & withdrawals"))
BUILTIN_COMPONENTS: tuple[tuple[str, str, ComponentKind, str], ...] = (
    ("rest-api", "REST API", "rest_api", "Orders, accounts and market data over HTTP"),
    ("ws-api", "WebSocket API", "ws_api", "Streaming orders, fills and market data"),
    ("market-data", "Market data", "market_data", "Order books, trades and prices"),
)


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
        self.groups = {g.id: g for g in self.loaded.groups}
        self.components = {c.id: c for c in self.loaded.components}
        self.incidents = {i.id: i for i in self.loaded.incidents}
        page = self.loaded.signals.get("page") or {"id": new_id()}
        self.page = {"id": page["id"], "name": page_name, "url": page_url.rstrip("/")}
        self._listeners: list[Listener] = []
        self._pending: list[Change] = []
        self._depth = 0
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
            try:
                with self.store.transaction():
                    yield
            except BaseException:
                if outer:
                    self._pending.clear()
                raise
            finally:
                self._depth -= 1
            if outer:
                changes, self._pending = self._pending, []
                for change in changes:
                    for listener in list(self._listeners):
                        try:
                            listener(change)
                        except Exception:
                            log.exception("status listener failed on %s", change.kind)

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
        self.store.record_status(cid, now, "operational", "created")
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
