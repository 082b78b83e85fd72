"""Status state and the rules that move it: components, incidents and maintenance in memory,
written through to SQLite, re-derived whenever the engine, node or wallets report, and
announced to listeners (WebSocket, webhooks) only after the change is durable.

Thread-safe: the node may call the `observe_*` methods from an engine thread while the HTTP
server reads and the operator writes from the event loop.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bastion.status import statuspage
from bastion.status.derive import (
    Signals,
    Thresholds,
    advisory,
    check_mode,
    derive_component,
    impact_for,
)
from bastion.status.errors import StatusError
from bastion.status.model import (
    IMPACT_RANK,
    LABELS,
    Component,
    ComponentKind,
    Group,
    Incident,
    Update,
    worst,
)
from bastion.status.store import Store

log = logging.getLogger("bastion.status")

Clock = Callable[[], int]
Event = dict[str, Any]
Listener = Callable[[Event], None]

UNHEALTHY = ("degraded_performance", "partial_outage", "major_outage")
BUILTIN_GROUPS = (("markets", "Markets"), ("apis", "APIs"), ("wallets", "Deposits & withdrawals"))
BUILTIN_COMPONENTS: tuple[tuple[str, str, ComponentKind, str], ...] = (
    ("rest-api", "REST API", "rest_api", "Orders, accounts and market data over HTTP"),
    ("ws-api", "WebSocket API", "ws_api", "Streaming orders, fills and market data"),
    ("market-data", "Market data", "market_data", "Order books, trades and prices"),
)
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$")


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def new_id() -> str:
    return secrets.token_hex(6)


class StatusTracker:
    """State, persistence, events, the input API and the derivation core."""

    def __init__(
        self,
        db_path: str | Path,
        *,
        page_name: str = "Bastion",
        page_url: str = "",
        clock: Clock = wall_clock_ms,
        thresholds: Thresholds | None = None,
        demo: bool = False,
    ) -> None:
        self.clock = clock
        self.thresholds = thresholds or Thresholds()
        self.demo = demo
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._pending: list[Event] = []
        self._depth = 0
        self._store = Store(db_path)
        loaded = self._store.load()
        self._groups = {g.id: g for g in loaded.groups}
        self._components = {c.id: c for c in loaded.components}
        self._incidents = {i.id: i for i in loaded.incidents}
        self._subscribers = {s.id: s for s in loaded.subscribers}
        page = loaded.signals.get("page") or {"id": new_id()}
        self.page = {"id": page["id"], "name": page_name, "url": page_url.rstrip("/")}
        self._signals = Signals(
            market_modes={
                k: (v[0], v[1]) for k, v in (loaded.signals.get("market_modes") or {}).items()
            },
            withdrawals_pending_since={},
            withdrawal_queues={},
        )
        self._mode_ts: dict[str, int] = dict(loaded.signals.get("market_mode_ts") or {})
        with self._tx():
            if "page" not in loaded.signals:
                self._store.put_signal("page", {"id": self.page["id"]})
            now = self.clock()
            for pos, (gid, name) in enumerate(BUILTIN_GROUPS):
                if gid not in self._groups:
                    self._add_group(gid, name, pos, now)
            for cid, name, kind, desc in BUILTIN_COMPONENTS:
                if cid not in self._components:
                    self._add_component(cid, name, kind, cid, "apis", desc, now)

    def close(self) -> None:
        self._store.close()

    # ---------------------------------------------------------------- listeners

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(event)` for every change; it must not block. Returns an unsubscriber."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """Lock, one durable transaction, and events released only after it commits."""
        with self._lock:
            outer = self._depth == 0
            self._depth += 1
            try:
                with self._store.transaction():
                    yield
            except BaseException:
                if outer:
                    self._pending.clear()
                raise
            finally:
                self._depth -= 1
            if outer:
                events, self._pending = self._pending, []
                for event in events:
                    for listener in list(self._listeners):
                        try:
                            listener(event)
                        except Exception:
                            log.exception("status listener failed on %s", event["type"])

    def _emit(self, events: list[Event]) -> None:
        self._pending.extend(events)

    def _event(self, kind: str, component_ids: Iterable[str], payload: dict[str, Any]) -> Event:
        return {
            "id": new_id(),
            "type": kind,
            "created_at": statuspage.iso(self.clock()),
            "component_ids": sorted(set(component_ids)),
            **payload,
        }

    # ---------------------------------------------------------------- registration

    def _add_group(self, gid: str, name: str, position: int, now: int) -> Group:
        g = Group(id=gid, name=name, position=position, created_ms=now)
        self._groups[gid] = g
        self._store.put_group(g)
        return g

    def _add_component(
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
            (c.position for c in self._components.values() if c.group_id == group_id), default=0
        )
        c = Component(
            id=cid,
            name=name,
            kind=kind,
            key=key,
            group_id=group_id,
            position=position,
            description=desc,
            created_ms=now,
            updated_ms=now,
        )
        self._components[cid] = c
        self._store.put_component(c)
        self._store.record_status(cid, now, "operational", "created")
        return c

    def _keyed(self, kind: ComponentKind, key: str) -> Component | None:
        return next((c for c in self._components.values() if c.kind == kind and c.key == key), None)

    def _free_id(self, base: str) -> str:
        cid, n = base, 2
        while cid in self._components:
            cid, n = f"{base}-{n}", n + 1
        return cid

    @staticmethod
    def _check_key(what: str, key: str) -> None:
        if not isinstance(key, str) or not _KEY.match(key):
            raise StatusError(
                f"invalid_{what}",
                f"{what} must be 1-64 characters of letters, digits and ._:/-, got {key!r}",
                422,
            )

    def register_market(self, market: str, name: str | None = None) -> str:
        """Make sure the market has an order-entry/matching component; returns its id."""
        self._check_key("market", market)
        with self._lock:
            existing = self._keyed("market", market)
            if existing:
                return existing.id
            with self._tx():
                c = self._add_component(
                    self._free_id(f"market-{slug(market)}"),
                    name or f"{market} trading",
                    "market",
                    market,
                    "markets",
                    f"Order entry and matching for {market}",
                    self.clock(),
                )
            return c.id

    def register_asset(self, asset: str) -> str:
        """Make sure the asset has a deposits & withdrawals component; returns its id."""
        self._check_key("asset", asset)
        with self._lock:
            existing = self._keyed("wallet", asset)
            if existing:
                return existing.id
            with self._tx():
                c = self._add_component(
                    self._free_id(f"wallet-{slug(asset)}"),
                    f"{asset} deposits & withdrawals",
                    "wallet",
                    asset,
                    "wallets",
                    f"Deposits and withdrawals of {asset}",
                    self.clock(),
                )
            return c.id

    # ---------------------------------------------------------------- inputs from the node

    def observe_market_mode(
        self, market: str, mode: str, reason: str = "", ts_ms: int | None = None
    ) -> bool:
        """Record the engine's mode for a market (open, post_only, cancel_only, recovery, halted,
        closed). `ts_ms` is when the engine switched; an observation older than the last one for
        the market is ignored, so journal replays are harmless. Returns whether it applied."""
        check_mode(mode)
        if not isinstance(reason, str) or len(reason) > 500:
            raise StatusError(
                "invalid_reason", "reason must be a string of at most 500 characters", 422
            )
        with self._lock:
            cid = self.register_market(market)
            ts = self.clock() if ts_ms is None else int(ts_ms)
            if ts < self._mode_ts.get(market, -1):
                return False
            if self._signals.market_modes.get(market) == (mode, reason):
                self._mode_ts[market] = ts
                return True
            self._signals.market_modes[market] = (mode, reason)
            self._mode_ts[market] = ts
            with self._tx():
                self._store.put_signal(
                    "market_modes", {k: list(v) for k, v in self._signals.market_modes.items()}
                )
                self._store.put_signal("market_mode_ts", self._mode_ts)
                self._reevaluate([cid])
            return True

    def observe_node_health(self, last_ack_ms: int, lag_ms: int) -> None:
        """Report the node's health: when the journal last acknowledged a write (heartbeats and
        lease renewals count) and how far the engine trails the journal. Matching degrades when
        the ack is older than `ack_timeout_ms` (re-checked by `tick`, so a silent node degrades
        too) or the lag exceeds `max_lag_ms`."""
        with self._lock:
            self._signals.last_ack_ms = int(last_ack_ms)
            self._signals.lag_ms = int(lag_ms)
            self._reevaluate_kind("market")

    def observe_node_failure(self, reason: str) -> None:
        """The node has stopped (journal I/O error, fenced...): every order is refused, so
        every market is a major outage until the node runs again (``""`` clears it)."""
        with self._lock:
            if self._signals.node_failure == reason:
                return
            self._signals.node_failure = reason[:300]
            self._reevaluate_kind("market")

    def observe_withdrawals(self, asset: str, oldest_pending_age_ms: int | None) -> None:
        """Report the age of the oldest pending withdrawal of `asset` (None when the queue is
        empty). It keeps ageing between reports, so a pipeline that stops reporting still shows
        as stuck once the age passes `withdrawal_stuck_ms`."""
        with self._lock:
            cid = self.register_asset(asset)
            pending = self._signals.withdrawals_pending_since
            assert pending is not None
            pending[asset] = (
                None if oldest_pending_age_ms is None else self.clock() - int(oldest_pending_age_ms)
            )
            with self._tx():
                self._reevaluate([cid])

    def observe_withdrawal_queue(self, asset: str, depth: int, oldest_age_ms: int,
                                 delayed: str) -> None:
        """Report the withdrawal pipeline's view of `asset`: queue depth, age of the oldest
        queued withdrawal, and why it is delayed ("" when it flows: paused, custody
        unreachable, not moving). The wallet component is degraded while `delayed` is set and
        clears itself with the first report that says it flows; `tick` keeps the age fresh."""
        if not isinstance(delayed, str) or len(delayed) > 300:
            raise StatusError("invalid_reason", "delayed must be at most 300 characters", 422)
        with self._lock:
            cid = self.register_asset(asset)
            queues = self._signals.withdrawal_queues
            assert queues is not None
            entry = (int(depth), self.clock() - int(oldest_age_ms), delayed)
            before = queues.get(asset)
            queues[asset] = entry
            if before is not None and before[0] == entry[0] and before[2] == delayed:
                return  # nothing a reader would see changed
            with self._tx():
                self._reevaluate([cid])

    def observe_engine_events(self, events: Iterable[object]) -> None:
        """Feed engine events as they are applied: MarketCreated and AssetCreated register
        components, ModeChanged drives the market status (its `ts` orders replays); others are
        ignored. Matched by class name so this module does not import the engine."""
        for ev in events:
            kind = type(ev).__name__
            if kind == "MarketCreated":
                self.register_market(ev.market)  # type: ignore[attr-defined]
            elif kind == "AssetCreated":
                self.register_asset(ev.asset)  # type: ignore[attr-defined]
            elif kind == "ModeChanged":
                self.observe_market_mode(ev.market, ev.new, ev.reason, ev.ts)  # type: ignore[attr-defined]

    def tick(self) -> None:
        """Apply time-based rules: stale journal acks, ageing withdrawals, maintenance that is due
        to start, and advance-warning phases."""
        with self._tx():
            now = self.clock()
            events: list[Event] = []
            for m in list(self._incidents.values()):
                if m.kind != "maintenance":
                    continue
                if (
                    m.status == "scheduled"
                    and m.scheduled_for_ms is not None
                    and now >= m.scheduled_for_ms
                ):
                    self._transition_maintenance(
                        m, "in_progress", "Scheduled maintenance is now in progress.", now, events
                    )
                    continue
                adv = advisory(now, m.scheduled_for_ms or now, m.status)
                if adv and adv[0] != m.announced_phase and m.status == "scheduled":
                    m.announced_phase = adv[0]
                    self._store.put_incident(m)
                    events.append(self._maintenance_event("maintenance.advisory", m))
            self._emit(events)
            self._reevaluate(list(self._components))

    def active_maintenances(self) -> list[str]:
        """Names of the maintenances in progress or being verified (for system-status APIs)."""
        with self._lock:
            return [m.name for m in self._incidents.values()
                    if m.kind == "maintenance" and m.status in ("in_progress", "verifying")]

    def _reevaluate_kind(self, kind: ComponentKind) -> None:
        with self._tx():
            self._reevaluate([c.id for c in self._components.values() if c.kind == kind])

    # ---------------------------------------------------------------- derivation core

    def _under_maintenance(self) -> set[str]:
        """Components covered by a maintenance that is in progress or being verified."""
        return {
            cid
            for m in self._incidents.values()
            if m.kind == "maintenance" and m.status in ("in_progress", "verifying")
            for cid in m.component_ids
        }

    def _open_incident_covering(self, cid: str) -> list[Incident]:
        return [
            i
            for i in self._incidents.values()
            if i.kind == "incident" and i.open and cid in i.component_ids
        ]

    def _reevaluate(self, ids: Iterable[str], recheck: bool = False) -> None:
        """Recompute statuses of `ids`; persist and announce changes, open incidents as needed
        (with `recheck`, also for unchanged ones: a maintenance ending leaves trouble uncovered).
        Callers hold the lock and an open transaction."""
        ids = list(ids)
        now = self.clock()
        covered = self._under_maintenance()
        changed: list[tuple[Component, str]] = []
        for cid in ids:
            c = self._components[cid]
            derived, reason = derive_component(
                c, self._signals, now, cid in covered, self.thresholds
            )
            effective = worst(derived, c.operator_status)
            c.derived_reason = reason
            if derived == c.derived and effective == c.status:
                continue
            old = c.status
            c.derived = derived
            if effective != old:
                c.status = effective
                c.updated_ms = now
                self._store.record_status(cid, now, effective, reason or c.operator_note)
                changed.append((c, old))
            self._store.put_component(c)
        events = [
            self._event(
                "component.updated",
                [c.id],
                {
                    "component_update": {
                        "id": new_id(),
                        "component_id": c.id,
                        "old_status": old,
                        "new_status": c.status,
                        "created_at": statuspage.iso(now),
                        "reason": c.derived_reason or c.operator_note,
                    },
                    "component": statuspage.component_json(c, self.page["id"]),
                },
            )
            for c, old in changed
        ]
        self._emit(events)
        events = []
        recheck_ids = [self._components[i] for i in ids] if recheck else []
        self._follow_incidents([c for c, _ in changed], now, covered, events, recheck_ids)
        self._emit(events)

    def _follow_incidents(
        self,
        changed: list[Component],
        now: int,
        covered: set[str],
        events: list[Event],
        recheck: list[Component],
    ) -> None:
        """Open an incident for unexplained trouble, raise impact on escalation, and note recovery."""
        candidates = list({c.id: c for c in changed + recheck}.values())
        uncovered = [
            c
            for c in candidates
            if c.status in UNHEALTHY
            and c.id not in covered
            and not self._open_incident_covering(c.id)
        ]
        if uncovered:
            names = ", ".join(c.name for c in uncovered)
            label = LABELS[worst(*(c.status for c in uncovered))].lower()
            detail = "; ".join(
                f"{c.name}: {LABELS[c.status].lower()} ({c.derived_reason or c.operator_note or 'reported by operator'})"
                for c in uncovered
            )
            inc = Incident(
                id=new_id(),
                kind="incident",
                name=f"{names}: {label}",
                status="investigating",
                impact=impact_for(worst(*(c.status for c in uncovered))),
                component_ids=[c.id for c in uncovered],
                created_ms=now,
                updated_ms=now,
                auto=True,
                started_ms=now,
            )
            inc.updates.append(
                Update(
                    id=new_id(),
                    status="investigating",
                    display_ms=now,
                    created_ms=now,
                    body=f"Automatically detected: {detail}. We are investigating and will post details here.",
                )
            )
            self._incidents[inc.id] = inc
            self._store.put_incident(inc)
            events.append(self._incident_event("incident.created", inc))
        touched: dict[str, tuple[Incident, list[Component]]] = {}
        for c in changed:
            for inc in self._open_incident_covering(c.id):
                touched.setdefault(inc.id, (inc, []))[1].append(c)
        for inc, comps in touched.values():
            before = (inc.impact, inc.status)
            wanted = impact_for(worst(*(c.status for c in comps)))
            if IMPACT_RANK[wanted] > IMPACT_RANK[inc.impact]:
                inc.impact = wanted
            if inc.auto:
                self._auto_follow_up(inc, comps, now)
            if (inc.impact, inc.status) != before:
                inc.updated_ms = now
                self._store.put_incident(inc)
                events.append(self._incident_event("incident.updated", inc))

    def _auto_follow_up(self, inc: Incident, comps: list[Component], now: int) -> None:
        """Keep an auto-opened incident honest until the operator takes over the wording."""
        down = [c for c in comps if c.status in UNHEALTHY]
        if down and inc.status == "monitoring":
            detail = "; ".join(
                f"{c.name}: {LABELS[c.status].lower()} ({c.derived_reason or c.operator_note})"
                for c in down
            )
            body = f"Trouble is back: {detail}. We are investigating."
            inc.status = "investigating"
        elif inc.status != "monitoring" and all(
            self._components[cid].status == "operational"
            for cid in inc.component_ids
            if cid in self._components
        ):
            body = "All affected components are operational again. We are monitoring."
            inc.status = "monitoring"
        else:
            return
        inc.updates.append(
            Update(id=new_id(), status=inc.status, body=body, display_ms=now, created_ms=now)
        )

    def _incident_event(self, kind: str, inc: Incident) -> Event:
        return self._event(
            kind,
            inc.component_ids,
            {
                "incident": statuspage.incident_json(
                    inc, self._components, self.page["id"], self.clock()
                )
            },
        )

    def _maintenance_event(self, kind: str, m: Incident) -> Event:
        return self._event(
            kind,
            m.component_ids,
            {
                "scheduled_maintenance": statuspage.incident_json(
                    m, self._components, self.page["id"], self.clock()
                )
            },
        )

    def _component_ids(self, ids: list[str]) -> list[str]:
        unknown = [i for i in ids if i not in self._components]
        if unknown:
            raise StatusError(
                "unknown_component", f"unknown component id(s): {', '.join(unknown)}", 422
            )
        return list(dict.fromkeys(ids))

    def _transition_maintenance(
        self, m: Incident, to: str, body: str, now: int, events: list[Event]
    ) -> None:
        m.status = to
        m.updated_ms = now
        if to == "in_progress":
            m.started_ms = now
            m.announced_phase = "in_progress"
        elif to == "verifying":
            m.verifying_ms = now
        elif to == "completed":
            m.resolved_ms = now
        m.updates.append(Update(id=new_id(), status=to, body=body, display_ms=now, created_ms=now))
        self._store.put_incident(m)
        events.append(self._maintenance_event(f"maintenance.{to}", m))
        self._emit(events)
        events.clear()
        self._reevaluate(m.component_ids, recheck=True)
