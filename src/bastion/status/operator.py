"""What an operator may do: add components, report statuses, write incidents, run
maintenance; each verb checked against the derived facts before anything changes."""

from __future__ import annotations

import copy

from bastion.status.board import StatusBoard, new_id, slug
from bastion.status.derive import (
    advisory,
    check_operator_status,
    impact_for,
)
from bastion.status.errors import StatusError
from bastion.status.model import (
    COMPONENT_STATUSES,
    IMPACTS,
    INCIDENT_STATUSES,
    LABELS,
    Component,
    Incident,
    Update,
    worst,
)
from bastion.status.tracker import UNHEALTHY, StatusTracker


class OperatorDesk:
    """Operator verbs. They write through the tracker's board (one lock, one transaction) and
    ask the tracker to re-derive what they touch, so an operator can annotate the facts but
    never hide them."""

    def __init__(self, board: StatusBoard, tracker: StatusTracker) -> None:
        self.board = board
        self.tracker = tracker

    @staticmethod
    def _check_text(field_name: str, value: str, limit: int) -> str:
        text = value.strip() if isinstance(value, str) else ""
        if not text or len(text) > limit:
            raise StatusError(
                f"invalid_{field_name}", f"{field_name} must be 1-{limit} characters", 422
            )
        return text

    def add_component(
        self, name: str, group: str | None = None, description: str = ""
    ) -> Component:
        """Add an operator-defined component, in an existing group (by id or name) or a new one."""
        name = self._check_text("name", name, 100)
        if len(description) > 500:
            raise StatusError(
                "invalid_description", "description must be at most 500 characters", 422
            )
        with self.board.tx():
            now = self.board.clock()
            gid: str | None = None
            found = None
            if group:
                group = self._check_text("group", group, 100)
                found = next(
                    (
                        g
                        for g in self.board.groups.values()
                        if g.id == group or g.name.lower() == group.lower()
                    ),
                    None,
                )
                gid = (
                    found.id
                    if found
                    else self.board.add_group(
                        f"group-{slug(group)}-{new_id()[:4]}", group, len(self.board.groups), now
                    ).id
                )
            if gid is not None and found is None:
                self.board.mark("group", gid)
            c = self.board.add_component(
                self.board.free_id(slug(name)), name, "custom", name, gid, description, now
            )
            self.board.mark("component", c.id)
            self.board.emit(self.board.component_change("component.created", c))
            return copy.deepcopy(c)

    def set_component_status(self, component_id: str, status: str, note: str = "") -> Component:
        """Operator status for a component; it can only make the shown status worse than derived.
        `operational` clears the operator's status (the derived one shows again)."""
        with self.board.tx():
            if component_id not in self.board.components:
                raise StatusError(
                    "component_not_found", f"no component with id {component_id!r}", 404
                )
            self._apply_operator_status([component_id], status, note)
            cid = component_id
            return copy.deepcopy(self.board.components[cid])

    def _check_operator_status(self, ids: list[str], status: str) -> None:
        if status not in COMPONENT_STATUSES:
            raise StatusError(
                "invalid_component_status",
                f"status must be one of {', '.join(COMPONENT_STATUSES)}",
                422,
            )
        for cid in ids:
            check_operator_status(self.board.components[cid], status)  # type: ignore[arg-type]

    def _apply_operator_status(
        self, ids: list[str], status: str, note: str, check: bool = True
    ) -> None:
        if check:
            self._check_operator_status(ids, status)
        now = self.board.clock()
        for cid in ids:
            c = self.board.components[cid]
            c.operator_status = status  # type: ignore[assignment]
            c.operator_note = note if status != "operational" else ""
            c.operator_ms = now
            self.board.store.put_component(c)
            self.board.mark("override", cid)
        self.tracker.reevaluate(ids, at_ms=now)

    def _check_impact(self, impact: str | None) -> None:
        if impact is not None and impact not in IMPACTS:
            raise StatusError("invalid_impact", f"impact must be one of {', '.join(IMPACTS)}", 422)

    def open_incident(
        self,
        name: str,
        body: str,
        component_ids: list[str],
        *,
        status: str = "investigating",
        impact: str | None = None,
        component_status: str | None = None,
    ) -> Incident:
        """Open an incident by hand; `component_status` also sets the affected components."""
        name = self._check_text("name", name, 200)
        body = self._check_text("body", body, 5000)
        self._check_impact(impact)
        if status not in ("investigating", "identified", "monitoring"):
            raise StatusError(
                "invalid_incident_status",
                "a new incident must be investigating, identified or monitoring",
                422,
            )
        with self.board.tx():
            ids = self.board.component_ids(component_ids)
            now = self.board.clock()
            shown = worst(*(self.board.components[i].status for i in ids)) if ids else "operational"
            if component_status is not None:
                self._check_operator_status(ids, component_status)
                shown = worst(shown, component_status)  # type: ignore[arg-type]
            inc = Incident(
                id=new_id(),
                kind="incident",
                name=name,
                status=status,
                impact=impact or (impact_for(shown) if shown in UNHEALTHY else "minor"),  # type: ignore[arg-type]
                component_ids=ids,
                created_ms=now,
                updated_ms=now,
                started_ms=now,
            )
            inc.updates.append(
                Update(id=new_id(), status=status, body=body, display_ms=now, created_ms=now)
            )
            self.board.incidents[inc.id] = inc
            self.board.store.put_incident(inc)
            self.board.mark("incident", inc.id)
            self.board.emit(self.board.incident_change("incident.created", inc))
            if component_status is not None:  # after it exists, so no second incident opens
                self._apply_operator_status(ids, component_status, name)
            return copy.deepcopy(inc)

    def update_incident(
        self,
        incident_id: str,
        status: str,
        body: str,
        *,
        impact: str | None = None,
        component_status: str | None = None,
    ) -> Incident:
        """Post an update; `resolved` also clears the operator statuses of its components, and is
        refused while one of them is a halted market."""
        body = self._check_text("body", body, 5000)
        self._check_impact(impact)
        if status not in INCIDENT_STATUSES:
            raise StatusError(
                "invalid_incident_status",
                f"status must be one of {', '.join(INCIDENT_STATUSES)}",
                422,
            )
        with self.board.tx():
            inc = self.board.item("incident", incident_id)
            now = self.board.clock()
            if not inc.open and status != "postmortem":
                raise StatusError(
                    "incident_resolved", "a resolved incident only takes a postmortem update", 409
                )
            if status == "resolved":
                self._check_resolvable(inc)
            if component_status is not None:
                self._apply_operator_status(inc.component_ids, component_status, inc.name)
            elif status == "resolved":  # clears the operator's statuses; derived ones stay
                self._apply_operator_status(inc.component_ids, "operational", "", check=False)
            was_open = inc.open
            inc.status = status
            if impact is not None:
                inc.impact = impact  # type: ignore[assignment]
            inc.updated_ms = now
            if status == "resolved" and inc.resolved_ms is None:
                inc.resolved_ms = now
            inc.updates.append(
                Update(id=new_id(), status=status, body=body, display_ms=now, created_ms=now)
            )
            self.board.store.put_incident(inc)
            self.board.mark("incident", inc.id)
            kind = "incident.resolved" if was_open and not inc.open else "incident.updated"
            self.board.emit(self.board.incident_change(kind, inc))
            return copy.deepcopy(inc)

    def _check_resolvable(self, inc: Incident) -> None:
        """Refuse to call an incident over while the facts say one of its components is not."""
        for c in (self.board.components[i] for i in inc.component_ids if i in self.board.components):
            if c.derived not in UNHEALTHY:
                continue
            code = (
                "market_halted"
                if c.kind == "market" and c.derived == "major_outage"
                else "still_unhealthy"
            )
            raise StatusError(
                code,
                f"cannot resolve while {c.name} is {LABELS[c.derived].lower()} ({c.derived_reason})",
                409,
            )

    def schedule_maintenance(
        self,
        name: str,
        body: str,
        component_ids: list[str],
        scheduled_for_ms: int,
        scheduled_until_ms: int,
    ) -> Incident:
        """Announce a maintenance window; it starts by itself at `scheduled_for_ms` (or earlier
        via `start_maintenance`) and ends only when an operator completes it."""
        name = self._check_text("name", name, 200)
        body = self._check_text("body", body, 5000)
        with self.board.tx():
            ids = self.board.component_ids(component_ids)
            if not ids:
                raise StatusError(
                    "no_components", "a maintenance must name at least one component", 422
                )
            now = self.board.clock()
            if scheduled_until_ms <= scheduled_for_ms:
                raise StatusError(
                    "invalid_window", "scheduled_until must be after scheduled_for", 422
                )
            if scheduled_until_ms <= now:
                raise StatusError("window_in_past", "scheduled_until is already in the past", 422)
            m = Incident(
                id=new_id(),
                kind="maintenance",
                name=name,
                status="scheduled",
                impact="none",
                component_ids=ids,
                created_ms=now,
                updated_ms=now,
                scheduled_for_ms=scheduled_for_ms,
                scheduled_until_ms=scheduled_until_ms,
            )
            adv = advisory(now, scheduled_for_ms, "scheduled")
            m.announced_phase = adv[0] if adv else None
            m.updates.append(
                Update(id=new_id(), status="scheduled", body=body, display_ms=now, created_ms=now)
            )
            self.board.incidents[m.id] = m
            self.board.store.put_incident(m)
            self.board.mark("incident", m.id)
            self.board.emit(self.board.incident_change("maintenance.scheduled", m))
            return copy.deepcopy(m)

    def start_maintenance(self, maintenance_id: str, body: str = "") -> Incident:
        return self._operator_transition(
            maintenance_id, "in_progress", ("scheduled",), body or "Maintenance has started."
        )

    def verify_maintenance(self, maintenance_id: str, body: str = "") -> Incident:
        return self._operator_transition(
            maintenance_id, "verifying", ("in_progress",), body or "Work is done; we are verifying."
        )

    def complete_maintenance(self, maintenance_id: str, body: str = "") -> Incident:
        return self._operator_transition(
            maintenance_id,
            "completed",
            ("in_progress", "verifying"),
            body or "Maintenance is complete.",
        )

    def _operator_transition(
        self, mid: str, to: str, allowed_from: tuple[str, ...], body: str
    ) -> Incident:
        if not isinstance(body, str) or len(body) > 5000:
            raise StatusError("invalid_body", "body must be at most 5000 characters", 422)
        with self.board.tx():
            m = self.board.item("maintenance", mid)
            if m.status not in allowed_from:
                raise StatusError(
                    "invalid_transition", f"maintenance is {m.status}; cannot move to {to}", 409
                )
            self.tracker.transition_maintenance(m, to, body.strip() or to, self.board.clock())
            self.board.mark("incident", m.id)
            return copy.deepcopy(m)
