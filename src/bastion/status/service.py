"""The status service: its parts composed on one board, and the consistent reads the edges render."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bastion.status.board import Clock, StatusBoard, wall_clock_ms
from bastion.status.derive import Thresholds
from bastion.status.errors import StatusConflict, StatusError
from bastion.status.model import Component, Group, Incident
from bastion.status.operator import OperatorDesk
from bastion.status.subscribers import Subscribers
from bastion.status.tracker import StatusTracker
from bastion.status.uptime import DAY_MS, DayUptime, daily_uptime

__all__ = ["StatusService", "View"]

T = TypeVar("T")


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


class StatusService:
    """The status page's parts, composed on one board:

    - `tracker`: inputs from the node, gateway and wallets (`register_*`, `observe_*`) and the
      time-based rules (`tick`, driven by `StatusRuntime.running()` when served over HTTP);
    - `operator`: what an operator may write (incidents, maintenance, component statuses);
    - `subscribers`: webhook subscribers;
    - `board.subscribe`: committed changes, for the WebSocket channel and webhooks.

    The reads below return private copies that the edges render (`statuspage`, `html`, `feed`).
    """

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
        self.demo = demo
        self.board = StatusBoard(db_path, page_name=page_name, page_url=page_url, clock=clock)
        self.tracker = StatusTracker(self.board, thresholds)
        self.operator = OperatorDesk(self.board, self.tracker)
        self.subscribers = Subscribers(self.board)
        #: how long `write` re-makes a change that conflicted with another gateway's
        self.conflict_wait = 5.0

    @property
    def page(self) -> dict[str, str]:
        return self.board.page

    def write(self, verb: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run an operator or subscriber verb; in a cluster it may block on the shared bucket
        (call it off the event loop), and a record changed meanwhile on another gateway is
        made again on the newer record once this gateway's watch brought it."""
        deadline = time.monotonic() + self.conflict_wait
        while True:
            writer = self.board.writer
            if writer is None:  # this gateway alone: the verb commits here
                return verb(*args, **kwargs)
            try:
                with self.board.dry_run() as records:
                    result = verb(*args, **kwargs)
                if records:  # stored, then applied here (the lock is free meanwhile)
                    writer(records)
                return result
            except StatusConflict:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        self.board.close()

    # ---------------------------------------------------------------- reads

    def view(self) -> View:
        """A consistent snapshot for rendering, safe to use without the lock."""
        with self.board.lock:
            group_pos = {g.id: g.position for g in self.board.groups.values()}
            comps = sorted(
                self.board.components.values(),
                key=lambda c: (group_pos.get(c.group_id or "", 99), c.position, c.name),
            )
            items = sorted(self.board.incidents.values(), key=lambda i: i.created_ms, reverse=True)
            return View(
                now_ms=self.board.clock(),
                page=dict(self.board.page),
                groups=copy.deepcopy(sorted(self.board.groups.values(), key=lambda g: g.position)),
                components=copy.deepcopy(comps),
                incidents=copy.deepcopy([i for i in items if i.kind == "incident"]),
                maintenances=copy.deepcopy([i for i in items if i.kind == "maintenance"]),
            )

    def component(self, component_id: str) -> Component:
        with self.board.lock:
            (cid,) = self.board.component_ids([component_id])
            return copy.deepcopy(self.board.components[cid])

    def incident(self, incident_id: str) -> Incident:
        with self.board.lock:
            item = self.board.incidents.get(incident_id)
            if item is None:
                raise StatusError("incident_not_found", f"no incident with id {incident_id!r}", 404)
            return copy.deepcopy(item)

    def uptime(self, days: int = 90) -> dict[str, list[DayUptime]]:
        """Per component, one entry per UTC day for the last `days` days, oldest first."""
        if not 1 <= days <= 366:
            raise StatusError("invalid_days", "days must be between 1 and 366", 422)
        now = self.board.clock()
        since = (now // DAY_MS - (days - 1)) * DAY_MS
        with self.board.lock:
            ids = list(self.board.components)
        result = {}
        for cid in ids:
            initial, changes = self.board.store.history(cid, since, now + 1)
            result[cid] = daily_uptime(initial, changes, now, days)
        return result
