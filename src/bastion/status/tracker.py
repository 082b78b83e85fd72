"""Derived status: what the node, the gateway and the wallets report, turned into component
statuses, automatic incidents and maintenance phases by the rules in `derive`."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from bastion.status.board import StatusBoard, new_id, slug
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
    Change,
    Component,
    ComponentKind,
    Incident,
    Update,
    worst,
)

UNHEALTHY = ("degraded_performance", "partial_outage", "major_outage")
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$")


def auto_incident_id(component_ids: list[str], at_ms: int) -> str:
    """The id of an incident opened automatically for `component_ids` at `at_ms`: the same on
    every gateway that derives it from the same cause, so an operator's update to it can be
    shared."""
    digest = hashlib.sha256(f"{','.join(component_ids)}@{at_ms}".encode()).hexdigest()
    return f"auto-{digest[:12]}"


class StatusTracker:
    """The input API (`register_*`, `observe_*`, `tick`) and the derivation core."""

    def __init__(self, board: StatusBoard, thresholds: Thresholds | None = None) -> None:
        self.board = board
        self.thresholds = thresholds or Thresholds()
        saved = board.loaded.signals
        self._signals = Signals(
            market_modes={k: (v[0], v[1]) for k, v in (saved.get("market_modes") or {}).items()},
            withdrawals_pending_since={},
            withdrawal_queues={},
        )
        self._mode_ts: dict[str, int] = dict(saved.get("market_mode_ts") or {})

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
        with self.board.lock:
            existing = self.board.keyed("market", market)
            if existing:
                return existing.id
            with self.board.tx():
                c = self.board.add_component(
                    self.board.free_id(f"market-{slug(market)}"),
                    name or f"{market} trading",
                    "market",
                    market,
                    "markets",
                    f"Order entry and matching for {market}",
                    self.board.clock(),
                )
            return c.id

    def register_asset(self, asset: str) -> str:
        """Make sure the asset has a deposits & withdrawals component; returns its id."""
        self._check_key("asset", asset)
        with self.board.lock:
            existing = self.board.keyed("wallet", asset)
            if existing:
                return existing.id
            with self.board.tx():
                c = self.board.add_component(
                    self.board.free_id(f"wallet-{slug(asset)}"),
                    f"{asset} deposits & withdrawals",
                    "wallet",
                    asset,
                    "wallets",
                    f"Deposits and withdrawals of {asset}",
                    self.board.clock(),
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
        with self.board.lock:
            cid = self.register_market(market)
            ts = self.board.clock() if ts_ms is None else int(ts_ms)
            if ts < self._mode_ts.get(market, -1):
                return False
            if self._signals.market_modes.get(market) == (mode, reason):
                self._mode_ts[market] = ts
                return True
            self._signals.market_modes[market] = (mode, reason)
            self._mode_ts[market] = ts
            with self.board.tx():
                self.board.store.put_signal(
                    "market_modes", {k: list(v) for k, v in self._signals.market_modes.items()}
                )
                self.board.store.put_signal("market_mode_ts", self._mode_ts)
                self.reevaluate([cid], at_ms=None if ts_ms is None else ts)
            return True

    def observe_node_health(self, last_ack_ms: int, lag_ms: int) -> None:
        """Report the node's health: when the journal last acknowledged a write (heartbeats and
        lease renewals count) and how far the engine trails the journal. Matching degrades when
        the ack is older than `ack_timeout_ms` (re-checked by `tick`, so a silent node degrades
        too) or the lag exceeds `max_lag_ms`."""
        with self.board.lock:
            self._signals.last_ack_ms = int(last_ack_ms)
            self._signals.lag_ms = int(lag_ms)
            self._reevaluate_kind("market")

    def observe_node_failure(self, reason: str) -> None:
        """The node has stopped (journal I/O error, fenced...): every order is refused, so
        every market is a major outage until the node runs again (``""`` clears it)."""
        with self.board.lock:
            if self._signals.node_failure == reason:
                return
            self._signals.node_failure = reason[:300]
            self._reevaluate_kind("market")

    def observe_withdrawals(self, asset: str, oldest_pending_age_ms: int | None) -> None:
        """Report the age of the oldest pending withdrawal of `asset` (None when the queue is
        empty). It keeps ageing between reports, so a pipeline that stops reporting still shows
        as stuck once the age passes `withdrawal_stuck_ms`."""
        with self.board.lock:
            cid = self.register_asset(asset)
            pending = self._signals.withdrawals_pending_since
            assert pending is not None
            pending[asset] = (
                None if oldest_pending_age_ms is None else self.board.clock() - int(oldest_pending_age_ms)
            )
            with self.board.tx():
                self.reevaluate([cid])

    def observe_withdrawal_queue(self, asset: str, depth: int, oldest_age_ms: int,
                                 delayed: str) -> None:
        """Report the withdrawal pipeline's view of `asset`: queue depth, age of the oldest
        queued withdrawal, and why it is delayed ("" when it flows: paused, custody
        unreachable, not moving). The wallet component is degraded while `delayed` is set and
        clears itself with the first report that says it flows; `tick` keeps the age fresh."""
        if not isinstance(delayed, str) or len(delayed) > 300:
            raise StatusError("invalid_reason", "delayed must be at most 300 characters", 422)
        with self.board.lock:
            cid = self.register_asset(asset)
            queues = self._signals.withdrawal_queues
            assert queues is not None
            entry = (int(depth), self.board.clock() - int(oldest_age_ms), delayed)
            before = queues.get(asset)
            queues[asset] = entry
            if before is not None and before[0] == entry[0] and before[2] == delayed:
                return  # nothing a reader would see changed
            with self.board.tx():
                self.reevaluate([cid])

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
        with self.board.tx():
            now = self.board.clock()
            for m in list(self.board.incidents.values()):
                if m.kind != "maintenance":
                    continue
                if (
                    m.status == "scheduled"
                    and m.scheduled_for_ms is not None
                    and now >= m.scheduled_for_ms
                ):
                    self.transition_maintenance(
                        m, "in_progress", "Scheduled maintenance is now in progress.", now
                    )
                    continue
                adv = advisory(now, m.scheduled_for_ms or now, m.status)
                if adv and adv[0] != m.announced_phase and m.status == "scheduled":
                    m.announced_phase = adv[0]
                    self.board.store.put_incident(m)
                    self.board.emit(self.board.incident_change("maintenance.advisory", m))
            self.reevaluate(list(self.board.components))

    def _reevaluate_kind(self, kind: ComponentKind) -> None:
        with self.board.tx():
            self.reevaluate([c.id for c in self.board.components.values() if c.kind == kind])

    # ---------------------------------------------------------------- derivation core

    def _under_maintenance(self) -> set[str]:
        """Components covered by a maintenance that is in progress or being verified."""
        return {
            cid
            for m in self.board.incidents.values()
            if m.kind == "maintenance" and m.status in ("in_progress", "verifying")
            for cid in m.component_ids
        }

    def _open_incident_covering(self, cid: str) -> list[Incident]:
        return [
            i
            for i in self.board.incidents.values()
            if i.kind == "incident" and i.open and cid in i.component_ids
        ]

    def reevaluate(self, ids: Iterable[str], recheck: bool = False,
                   at_ms: int | None = None) -> None:
        """Recompute statuses of `ids`; persist and announce changes, open incidents as needed
        (with `recheck`, also for unchanged ones: a maintenance ending leaves trouble uncovered).
        `at_ms` is when the cause happened (an engine event's ts, an operator's write): the
        history and an incident it opens carry it, so every gateway of a cluster derives the
        same transition and the same incident id from it. Callers hold the lock and an open
        transaction."""
        ids = list(ids)
        clock = self.board.clock()
        now = clock if at_ms is None else at_ms
        covered = self._under_maintenance()
        changed: list[tuple[Component, str]] = []
        for cid in ids:
            c = self.board.components[cid]
            derived, reason = derive_component(
                c, self._signals, clock, cid in covered, self.thresholds
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
                self.board.record_status(cid, now, effective, reason or c.operator_note)
                changed.append((c, old))
            self.board.store.put_component(c)
        self.board.emit(
            *(self.board.component_change("component.updated", c, old) for c, old in changed)
        )
        events: list[Change] = []
        recheck_ids = [self.board.components[i] for i in ids] if recheck else []
        self._follow_incidents([c for c, _ in changed], now, covered, events, recheck_ids)
        self.board.emit(*events)

    def _follow_incidents(
        self,
        changed: list[Component],
        now: int,
        covered: set[str],
        events: list[Change],
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
                id=auto_incident_id([c.id for c in uncovered], now),
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
                    id=f"{inc.id}-1",
                    status="investigating",
                    display_ms=now,
                    created_ms=now,
                    body=f"Automatically detected: {detail}. We are investigating and will post details here.",
                )
            )
            self.board.incidents[inc.id] = inc
            self.board.store.put_incident(inc)
            events.append(self.board.incident_change("incident.created", inc))
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
                self.board.store.put_incident(inc)
                events.append(self.board.incident_change("incident.updated", inc))

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
            self.board.components[cid].status == "operational"
            for cid in inc.component_ids
            if cid in self.board.components
        ):
            body = "All affected components are operational again. We are monitoring."
            inc.status = "monitoring"
        else:
            return
        inc.updates.append(Update(id=f"{inc.id}-{len(inc.updates) + 1}", status=inc.status,
                                  body=body, display_ms=now, created_ms=now))

    def transition_maintenance(self, m: Incident, to: str, body: str, now: int) -> None:
        """Move a maintenance on, announce it, and re-derive what it covered."""
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
        self.board.store.put_incident(m)
        self.board.emit(self.board.incident_change(f"maintenance.{to}", m))
        self.reevaluate(m.component_ids, recheck=True)
