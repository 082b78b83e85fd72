"""JSON shapes: Atlassian Statuspage v2 (so existing clients and widgets work) and OKX
`/api/v5/system/status`. Pure functions of a `View`, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bastion.status.derive import advisory, page_indicator
from bastion.status.errors import StatusError
from bastion.status.model import Change, Component, Group, Incident, worst

if TYPE_CHECKING:
    from bastion.status.service import View

JSON = dict[str, Any]
OKX_STATES = ("scheduled", "ongoing", "pre_open", "completed", "canceled")


def iso(ms: int | None) -> str | None:
    """RFC 3339 UTC with milliseconds, as Statuspage emits."""
    if ms is None:
        return None
    return (
        datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    )


def page_json(v: View) -> JSON:
    return {
        "id": v.page["id"],
        "name": v.page["name"],
        "url": v.page["url"],
        "time_zone": "Etc/UTC",
        "updated_at": iso(v.updated_ms),
    }


def component_json(c: Component, page_id: str) -> JSON:
    return {
        "id": c.id,
        "name": c.name,
        "status": c.status,
        "created_at": iso(c.created_ms),
        "updated_at": iso(c.updated_ms),
        "position": c.position,
        "description": c.description or None,
        # Bastion extension: why the derived status is what it is (e.g. "Withdrawals of BTC
        # are delayed (...); 12 queued, oldest waiting 40 s")
        "reason": c.derived_reason or None,
        "showcase": True,
        "start_date": iso(c.created_ms)[:10] if c.created_ms else None,  # type: ignore[index]
        "group_id": c.group_id,
        "page_id": page_id,
        "group": False,
        "only_show_if_degraded": False,
    }


def group_json(g: Group, children: list[Component], page_id: str) -> JSON:
    return {
        "id": g.id,
        "name": g.name,
        "status": worst(*(c.status for c in children)),
        "created_at": iso(g.created_ms),
        "updated_at": iso(max((c.updated_ms for c in children), default=g.created_ms)),
        "position": g.position,
        "description": None,
        "showcase": False,
        "start_date": None,
        "group_id": None,
        "page_id": page_id,
        "group": True,
        "only_show_if_degraded": False,
        "components": [c.id for c in children],
    }


def components_list(v: View) -> list[JSON]:
    """Groups (with their children's worst status) followed by their components, Statuspage order."""
    out: list[JSON] = []
    pid = v.page["id"]
    for g in v.groups:
        children = [c for c in v.components if c.group_id == g.id]
        if children:
            out.append(group_json(g, children, pid))
            out.extend(component_json(c, pid) for c in children)
    out.extend(component_json(c, pid) for c in v.components if c.group_id is None)
    return out


def incident_json(
    i: Incident, components: Mapping[str, Component], page_id: str, now_ms: int
) -> JSON:
    """An incident or scheduled maintenance with its updates, newest first."""
    monitoring = next((u.display_ms for u in i.updates if u.status == "monitoring"), None)
    out: JSON = {
        "id": i.id,
        "name": i.name,
        "status": i.status,
        "created_at": iso(i.created_ms),
        "updated_at": iso(i.updated_ms),
        "monitoring_at": iso(monitoring),
        "resolved_at": iso(i.resolved_ms),
        "impact": "maintenance" if i.kind == "maintenance" else i.impact,
        "shortlink": None,
        "started_at": iso(i.started_ms or i.created_ms),
        "page_id": page_id,
        "auto_detected": i.auto,
        "incident_updates": [
            {
                "id": u.id,
                "status": u.status,
                "body": u.body,
                "incident_id": i.id,
                "created_at": iso(u.created_ms),
                "updated_at": iso(u.created_ms),
                "display_at": iso(u.display_ms),
            }
            for u in reversed(i.updates)
        ],
        "components": [
            component_json(components[c], page_id) for c in i.component_ids if c in components
        ],
    }
    if i.kind == "maintenance":
        out["scheduled_for"] = iso(i.scheduled_for_ms)
        out["scheduled_until"] = iso(i.scheduled_until_ms)
        adv = advisory(now_ms, i.scheduled_for_ms or now_ms, i.status)
        out["advisory"] = {"phase": adv[0], "action": adv[1]} if adv else None
        out["overrunning"] = i.status != "completed" and now_ms > (i.scheduled_until_ms or now_ms)
    return out


def change_json(ch: Change, page_id: str) -> JSON:
    """A committed change as the WebSocket channel and webhooks publish it: the event envelope
    plus the Statuspage payload for its kind (a subscriber's secret never leaves)."""
    out: JSON = {"id": ch.id, "type": ch.kind, "created_at": iso(ch.at_ms),
                 "component_ids": list(ch.component_ids)}
    if ch.incident is not None:
        key = "scheduled_maintenance" if ch.incident.kind == "maintenance" else "incident"
        out[key] = incident_json(ch.incident, ch.components, page_id, ch.at_ms)
    if ch.component is not None:
        c = ch.component
        if ch.kind == "component.updated":
            out["component_update"] = {
                "id": ch.id, "component_id": c.id, "old_status": ch.old_status,
                "new_status": c.status, "created_at": iso(ch.at_ms),
                "reason": c.derived_reason or c.operator_note,
            }
        out["component"] = component_json(c, page_id)
    if ch.subscriber is not None:
        out["subscriber"] = {"id": ch.subscriber.id, "url": ch.subscriber.url,
                             "reason": ch.reason}
    return out


def _incidents(v: View, items: list[Incident]) -> list[JSON]:
    comps = {c.id: c for c in v.components}
    return [incident_json(i, comps, v.page["id"], v.now_ms) for i in items]


def page_status(v: View) -> tuple[str, str]:
    """Page indicator and description. Incidents in `monitoring` no longer raise it: the fix is
    in and the components say how things are."""
    active = [i.impact for i in v.incidents if i.status in ("investigating", "identified")]
    return page_indicator([c.status for c in v.components], active)


def status_json(v: View) -> JSON:
    indicator, description = page_status(v)
    return {"page": page_json(v), "status": {"indicator": indicator, "description": description}}


def active_maintenances(v: View) -> list[Incident]:
    return [m for m in v.maintenances if m.status in ("in_progress", "verifying")]


def upcoming_maintenances(v: View) -> list[Incident]:
    return sorted(
        (m for m in v.maintenances if m.status == "scheduled"),
        key=lambda m: m.scheduled_for_ms or 0,
    )


def summary_json(v: View) -> JSON:
    return {
        **status_json(v),
        "components": components_list(v),
        "incidents": _incidents(v, [i for i in v.incidents if i.open]),
        "scheduled_maintenances": _incidents(v, active_maintenances(v) + upcoming_maintenances(v)),
    }


def components_json(v: View) -> JSON:
    return {"page": page_json(v), "components": components_list(v)}


def incidents_json(v: View, unresolved_only: bool = False) -> JSON:
    items = [i for i in v.incidents if i.open] if unresolved_only else v.incidents[:50]
    return {"page": page_json(v), "incidents": _incidents(v, items)}


def maintenances_json(v: View, which: str = "all") -> JSON:
    items = {
        "all": v.maintenances[:50],
        "upcoming": upcoming_maintenances(v),
        "active": active_maintenances(v),
    }[which]
    return {"page": page_json(v), "scheduled_maintenances": _incidents(v, items)}


def uptime_json(v: View, uptime: Mapping[str, list[Any]]) -> JSON:
    from bastion.status.uptime import overall

    return {
        "page": page_json(v),
        "components": [
            {
                "id": c.id,
                "name": c.name,
                "uptime_percentage": overall(uptime.get(c.id, [])),
                "days": [
                    {
                        "date": d.date,
                        "uptime_percentage": d.uptime,
                        "worst_status": d.worst,
                        "down_ms": d.down_ms,
                    }
                    for d in uptime.get(c.id, [])
                ],
            }
            for c in v.components
        ],
    }


# ------------------------------------------------------------------------------- OKX


def _okx_service_type(i: Incident, comps: Mapping[str, Component]) -> str:
    kinds = {comps[c].kind for c in i.component_ids if c in comps}
    if kinds & {"market", "rest_api"}:
        return "5"
    if kinds and kinds <= {"ws_api", "market_data"}:
        return "0"
    return "99"


def _okx_state(i: Incident) -> str:
    if i.kind == "incident":
        return "ongoing" if i.open else "completed"
    return {"scheduled": "scheduled", "in_progress": "ongoing", "verifying": "pre_open"}.get(
        i.status, "completed"
    )


def okx_entry(i: Incident, v: View, comps: Mapping[str, Component], demo: bool) -> JSON:
    if i.kind == "maintenance":
        begin = i.started_ms or i.scheduled_for_ms or i.created_ms
        end = i.resolved_ms or i.scheduled_until_ms
    else:
        begin, end = i.started_ms or i.created_ms, i.resolved_ms
    base = v.page["url"] or ""
    return {
        "title": i.name,
        "state": _okx_state(i),
        "begin": str(begin),
        "end": "" if end is None else str(end),
        "preOpenBegin": "" if i.verifying_ms is None else str(i.verifying_ms),
        "href": f"{base}/status#{i.kind}-{i.id}",
        "serviceType": _okx_service_type(i, comps),
        "scheDesc": "",
        "maintType": "1" if i.kind == "maintenance" else "3",
        "env": "2" if demo else "1",
    }


def okx_system_status(v: View, state: str | None, demo: bool) -> JSON:
    """OKX semantics: without `state`, only scheduled, ongoing and pre_open entries."""
    if state is not None and state not in OKX_STATES:
        raise StatusError("invalid_state", f"state must be one of {', '.join(OKX_STATES)}", 400)
    wanted = {state} if state else {"scheduled", "ongoing", "pre_open"}
    comps = {c.id: c for c in v.components}
    items = [i for i in v.maintenances + v.incidents if _okx_state(i) in wanted]
    return {"code": "0", "msg": "", "data": [okx_entry(i, v, comps, demo) for i in items]}
