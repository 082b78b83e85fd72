"""The status service: what the node, the gateway and the operator API talk to."""

from __future__ import annotations

import copy
import secrets
from dataclasses import dataclass, field

from bastion.status.errors import StatusError
from bastion.status.model import (
    Component,
    Group,
    Incident,
    Subscriber,
)
from bastion.status.operator import OperatorActions
from bastion.status.tracker import Clock, Event, Listener, new_id, wall_clock_ms
from bastion.status.uptime import DAY_MS, DayUptime, daily_uptime

__all__ = ["Clock", "Event", "Listener", "StatusService", "View", "wall_clock_ms"]


@dataclass
class View:
    """A consistent, private copy of everything the public interfaces render."""

    now_ms: int
    page: dict[str, str]
    groups: list[Group]
    components: list[Component]
    incidents: list[Incident] = field(default_factory=list)
    maintenances: list[Incident] = field(default_factory=list)

    @property
    def updated_ms(self) -> int:
        stamps = [c.updated_ms for c in self.components]
        stamps += [i.updated_ms for i in self.incidents + self.maintenances]
        return max(stamps, default=0)

    def component(self, component_id: str) -> Component | None:
        return next((c for c in self.components if c.id == component_id), None)


class StatusService(OperatorActions):
    """Status of the exchange as users should see it, derived first and annotated by operators.

    Inputs from the node/gateway: `register_market`, `register_asset`, `observe_market_mode`,
    `observe_node_health`, `observe_withdrawals`, `observe_withdrawal_queue` (or
    `observe_engine_events`); `tick` re-applies
    the time-based rules and is driven by `StatusRuntime.running()` when served over HTTP.
    """

    # ---------------------------------------------------------------- webhook subscribers

    def add_subscriber(
        self, url: str, component_ids: list[str] | None = None, secret: str | None = None
    ) -> Subscriber:
        """Register a webhook; the secret signs every payload and is shown only here."""
        with self._tx():
            ids = None if component_ids is None else self._component_ids(component_ids)
            if secret is not None and not (16 <= len(secret) <= 256):
                raise StatusError("invalid_secret", "secret must be 16-256 characters", 422)
            sub = Subscriber(
                id=new_id(),
                url=url,
                secret=secret or secrets.token_hex(32),
                component_ids=ids,
                created_ms=self.clock(),
            )
            self._subscribers[sub.id] = sub
            self._store.put_subscriber(sub)
            return copy.deepcopy(sub)

    def subscribers(self) -> list[Subscriber]:
        with self._lock:
            return copy.deepcopy(list(self._subscribers.values()))

    def _subscriber(self, sub_id: str) -> Subscriber:
        sub = self._subscribers.get(sub_id)
        if sub is None:
            raise StatusError("subscriber_not_found", f"no subscriber with id {sub_id!r}", 404)
        return sub

    def remove_subscriber(self, sub_id: str) -> None:
        with self._tx():
            self._subscriber(sub_id)
            del self._subscribers[sub_id]
            self._store.delete_subscriber(sub_id)

    def set_subscriber_enabled(self, sub_id: str, enabled: bool, reason: str = "") -> Subscriber:
        """Enable (operator) or disable (dispatcher, after repeated failures) a subscriber."""
        with self._tx():
            sub = self._subscriber(sub_id)
            sub.enabled = enabled
            sub.disabled_ms = None if enabled else self.clock()
            sub.disabled_reason = "" if enabled else reason
            if enabled:
                sub.failed_attempts = 0
            self._store.put_subscriber(sub)
            event = "subscriber.enabled" if enabled else "subscriber.disabled"
            self._emit(
                [
                    self._event(
                        event, [], {"subscriber": {"id": sub.id, "url": sub.url, "reason": reason}}
                    )
                ]
            )
            return copy.deepcopy(sub)

    def record_delivery(self, sub_id: str, ok: bool) -> None:
        """Count a delivery attempt; only failures are persisted (successes are kept in memory)."""
        with self._lock:
            sub = self._subscribers.get(sub_id)
            if sub is None:
                return
            if ok:
                sub.delivered += 1
                return
            sub.failed_attempts += 1
            self._store.put_subscriber(sub)

    # ---------------------------------------------------------------- reads

    def view(self) -> View:
        """A consistent snapshot for rendering, safe to use without the lock."""
        with self._lock:
            group_pos = {g.id: g.position for g in self._groups.values()}
            comps = sorted(
                self._components.values(),
                key=lambda c: (group_pos.get(c.group_id or "", 99), c.position, c.name),
            )
            items = sorted(self._incidents.values(), key=lambda i: i.created_ms, reverse=True)
            return View(
                now_ms=self.clock(),
                page=dict(self.page),
                groups=copy.deepcopy(sorted(self._groups.values(), key=lambda g: g.position)),
                components=copy.deepcopy(comps),
                incidents=copy.deepcopy([i for i in items if i.kind == "incident"]),
                maintenances=copy.deepcopy([i for i in items if i.kind == "maintenance"]),
            )

    def component(self, component_id: str) -> Component:
        with self._lock:
            (cid,) = self._component_ids([component_id])
            return copy.deepcopy(self._components[cid])

    def incident(self, incident_id: str) -> Incident:
        with self._lock:
            item = self._incidents.get(incident_id)
            if item is None:
                raise StatusError("incident_not_found", f"no incident with id {incident_id!r}", 404)
            return copy.deepcopy(item)

    def uptime(self, days: int = 90) -> dict[str, list[DayUptime]]:
        """Per component, one entry per UTC day for the last `days` days, oldest first."""
        if not 1 <= days <= 366:
            raise StatusError("invalid_days", "days must be between 1 and 366", 422)
        now = self.clock()
        since = (now // DAY_MS - (days - 1)) * DAY_MS
        with self._lock:
            ids = list(self._components)
        result = {}
        for cid in ids:
            initial, changes = self._store.history(cid, since, now + 1)
            result[cid] = daily_uptime(initial, changes, now, days)
        return result
