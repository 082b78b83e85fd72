"""Status vocabulary and records; plain msgspec Structs so they persist and serialise cheaply."""

from __future__ import annotations

from typing import Literal, get_args

import msgspec

ComponentStatus = Literal[
    "operational", "degraded_performance", "partial_outage", "major_outage", "under_maintenance"
]
IncidentStatus = Literal["investigating", "identified", "monitoring", "resolved", "postmortem"]
Impact = Literal["none", "minor", "major", "critical"]
MaintenanceStatus = Literal["scheduled", "in_progress", "verifying", "completed"]
MarketMode = Literal["open", "post_only", "cancel_only", "recovery", "halted", "closed"]
AdvisoryPhase = Literal[
    "announced",
    "reminder_24h",
    "approaching_30m",
    "imminent_5m",
    "final_warning_30s",
    "in_progress",
]
ClientAction = Literal[
    "continue", "reduce_activity", "cancel_open_orders", "stop_new_orders", "disconnect_and_wait"
]
ComponentKind = Literal["market", "wallet", "rest_api", "ws_api", "market_data", "custom"]

COMPONENT_STATUSES: tuple[str, ...] = get_args(ComponentStatus)
INCIDENT_STATUSES: tuple[str, ...] = get_args(IncidentStatus)
IMPACTS: tuple[str, ...] = get_args(Impact)
MARKET_MODES: tuple[str, ...] = get_args(MarketMode)

# Worse statuses win when signals combine; maintenance ranks just above operational because it
# is planned and announced, anything unplanned must outrank it.
SEVERITY: dict[str, int] = {
    "operational": 0,
    "under_maintenance": 1,
    "degraded_performance": 2,
    "partial_outage": 3,
    "major_outage": 4,
}
IMPACT_RANK: dict[str, int] = {"none": 0, "minor": 1, "major": 2, "critical": 3}

LABELS: dict[str, str] = {
    "operational": "Operational",
    "degraded_performance": "Degraded performance",
    "partial_outage": "Partial outage",
    "major_outage": "Major outage",
    "under_maintenance": "Under maintenance",
}


def worst(*statuses: ComponentStatus) -> ComponentStatus:
    """The most severe of the given statuses (operational when none)."""
    result: ComponentStatus = "operational"
    for status in statuses:
        if SEVERITY[status] > SEVERITY[result]:
            result = status
    return result


class Group(msgspec.Struct, kw_only=True):
    id: str
    name: str
    position: int
    created_ms: int


class Component(msgspec.Struct, kw_only=True):
    """A thing users care about; `status` is what the page shows, the rest explains why."""

    id: str
    name: str
    kind: ComponentKind
    key: str
    group_id: str | None
    position: int
    description: str
    created_ms: int
    status: ComponentStatus = "operational"
    derived: ComponentStatus = "operational"
    derived_reason: str = ""
    operator_status: ComponentStatus = "operational"
    operator_note: str = ""
    #: when the operator set `operator_status` (shared with it, see `Override`)
    operator_ms: int = 0
    updated_ms: int = 0


class Update(msgspec.Struct, kw_only=True):
    id: str
    status: str
    body: str
    display_ms: int
    created_ms: int


class Incident(msgspec.Struct, kw_only=True):
    """An incident or a scheduled maintenance; Statuspage models both as incidents with updates."""

    id: str
    kind: Literal["incident", "maintenance"]
    name: str
    status: str
    impact: Impact
    component_ids: list[str]
    created_ms: int
    updated_ms: int
    auto: bool = False
    resolved_ms: int | None = None
    started_ms: int | None = None
    scheduled_for_ms: int | None = None
    scheduled_until_ms: int | None = None
    verifying_ms: int | None = None
    announced_phase: str | None = None
    updates: list[Update] = msgspec.field(default_factory=list)

    @property
    def open(self) -> bool:
        """Whether it still needs the operator: unresolved incident or uncompleted maintenance."""
        return self.status not in ("resolved", "postmortem", "completed")


class Subscriber(msgspec.Struct, kw_only=True):
    id: str
    url: str
    secret: str
    component_ids: list[str] | None
    created_ms: int
    enabled: bool = True
    disabled_ms: int | None = None
    disabled_reason: str = ""
    delivered: int = 0
    failed_attempts: int = 0


class Change(msgspec.Struct, kw_only=True, frozen=True):
    """One committed status change as listeners receive it: private copies of the records it
    touched, rendered to Statuspage JSON only at the edges (`statuspage.change_json`)."""

    id: str
    kind: str
    at_ms: int
    component_ids: list[str]
    component: Component | None = None
    old_status: str = ""
    incident: Incident | None = None
    components: dict[str, Component] = msgspec.field(default_factory=dict)
    subscriber: Subscriber | None = None
    reason: str = ""


class Override(msgspec.Struct, kw_only=True):
    """An operator's status for a component, as gateways share it (`at_ms`: when it was set,
    so every gateway records the transition it causes at the same time)."""

    status: ComponentStatus
    note: str
    at_ms: int
