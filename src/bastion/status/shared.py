"""What the gateways of a cluster share of the status state, and how a record written on
another gateway is applied here.

Shared, one record per key (`StatusBoard.record` gives the form): `incident.<id>` (incidents
and maintenances an operator wrote or updated, auto ones included once touched),
`override.<component>` (the operator's status and note), `component.<id>` and `group.<id>`
(operator-defined ones), `subscriber.<id>` (webhook subscribers). Derived state is not shared:
every gateway derives it from the same engine events. The status history is shared as rows
keyed by what caused them (`history_key`), written by every gateway and stored once.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import msgspec

from bastion.status.model import Change, Component, Group, Incident, Override, Subscriber

if TYPE_CHECKING:
    from bastion.status.service import StatusService

KINDS = ("incident", "override", "component", "group", "subscriber")


def shared_key(key: str) -> bool:
    return key.partition(".")[0] in KINDS


def apply_record(service: StatusService, key: str, value: bytes | None) -> bool:
    """Install record `key` as another gateway wrote it: the local store, the change listeners
    (page, WebSocket channel, webhooks) and the derived statuses of the components it names.
    Returns False when this gateway already holds exactly that record."""
    board, tracker = service.board, service.tracker
    kind, _, rid = key.partition(".")
    with board.tx(), board.applying():
        if board.record(key) == value:
            return False
        if kind == "incident" and value is None:  # a create the bucket confirmed too late
            if board.incidents.pop(rid, None) is not None:
                board.store.delete_incident(rid)
        elif kind == "incident" and value is not None:
            _apply_incident(service, msgspec.json.decode(value, type=Incident))
        elif kind == "override" and rid in board.components:
            o = (Override(status="operational", note="", at_ms=board.clock()) if value is None
                 else msgspec.json.decode(value, type=Override))
            c = board.components[rid]
            c.operator_status, c.operator_note, c.operator_ms = o.status, o.note, o.at_ms
            board.store.put_component(c)
            tracker.reevaluate([rid], at_ms=o.at_ms)
        elif kind == "group" and value is not None:
            g = msgspec.json.decode(value, type=Group)
            board.groups[g.id] = g
            board.store.put_group(g)
        elif kind == "component" and value is not None:
            _apply_component(service, msgspec.json.decode(value, type=Component))
        elif kind == "subscriber":
            _apply_subscriber(service, rid, value)
        else:
            return False
        return True


def _apply_incident(service: StatusService, inc: Incident) -> None:
    board = service.board
    before = board.incidents.get(inc.id)
    board.incidents[inc.id] = inc
    board.store.put_incident(inc)
    if inc.kind == "maintenance":
        if before is None:
            kind = "maintenance.scheduled"
        elif before.status != inc.status:
            kind = f"maintenance.{inc.status}"
        else:
            kind = "maintenance.advisory"
    elif before is None:
        kind = "incident.created"
    elif before.open and not inc.open:
        kind = "incident.resolved"
    else:
        kind = "incident.updated"
    board.emit(board.incident_change(kind, inc))
    known = [cid for cid in inc.component_ids if cid in board.components]
    service.tracker.reevaluate(known, recheck=True, at_ms=inc.updated_ms)


def _apply_component(service: StatusService, c: Component) -> None:
    board = service.board
    here = board.components.get(c.id)
    if here is None:
        board.components[c.id] = c
        board.store.put_component(c)
        board.record_status(c.id, c.created_ms, "operational", "created")
        board.emit(board.component_change("component.created", c))
        return
    here.name, here.group_id, here.description = c.name, c.group_id, c.description
    here.position = c.position
    board.store.put_component(here)


def _apply_subscriber(service: StatusService, sub_id: str, value: bytes | None) -> None:
    board = service.board
    here = board.subscribers.get(sub_id)
    if value is None:
        if here is not None:
            del board.subscribers[sub_id]
            board.store.delete_subscriber(sub_id)
        return
    sub = msgspec.json.decode(value, type=Subscriber)
    if here is not None:  # delivery counters are this gateway's own
        sub.delivered, sub.failed_attempts = here.delivered, here.failed_attempts
    board.subscribers[sub_id] = sub
    board.store.put_subscriber(sub)
    if here is not None and here.enabled != sub.enabled:
        board.emit(Change(
            id=f"{sub_id}-{sub.disabled_ms or sub.created_ms}",
            kind="subscriber.enabled" if sub.enabled else "subscriber.disabled",
            at_ms=board.clock(), component_ids=[], subscriber=copy.deepcopy(sub),
            reason=sub.disabled_reason))


def history_key(component_id: str, ts_ms: int, status: str) -> str:
    """One status transition: the same key on every gateway that derives it from the same
    cause (engine event, operator record), so it is stored once."""
    return f"{component_id}.{ts_ms}.{status}"


def apply_history(service: StatusService, key: str, value: bytes | None) -> None:
    """A status transition another gateway recorded (value: its reason)."""
    cid, _, rest = key.partition(".")
    ts, _, status = rest.partition(".")
    if value is None or not ts.isdigit() or not status:
        return
    service.board.store.record_status_once(cid, int(ts), status, value.decode("utf-8", "replace"))
