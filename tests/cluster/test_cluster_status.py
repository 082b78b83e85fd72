"""The status state is shared by every gateway (the shard's status buckets): an incident posted
on gateway 1 is shown on gateway 2, an override set on gateway 2 on gateway 1; a gateway
restarted with an empty data directory shows the same incidents, subscribers and uptime; a
webhook subscriber (a real HTTP receiver) gets each change once, not once per gateway, also
after the gateway delivering them was SIGKILLed (another takes the webhook lease); a change
the bucket cannot take is a clear 503 that leaves nothing behind; status reads and operator
writes keep working with the engine's only node SIGKILLed."""

from __future__ import annotations

import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from cluster_harness import ADMIN, running
from status_support import Delivery, receiver

AUTH = {"Authorization": f"Bearer {ADMIN}"}
#: logged by the gateway that takes the webhook lease
DELIVERS = "this gateway delivers the webhooks"


def _until(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """The first truthy ``check()`` (another gateway applies a record within milliseconds;
    the margin is for a loaded machine)."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def _incident_ids(url: str) -> set[str]:
    r = httpx.get(f"{url}/api/v2/incidents.json", timeout=10)
    assert r.status_code == 200, r.text
    return {i["id"] for i in r.json()["incidents"]}


def _component(url: str, cid: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/api/v2/components.json", timeout=10)
    assert r.status_code == 200, r.text
    return next(c for c in r.json()["components"] if c["id"] == cid)


def _today(url: str, cid: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/api/v2/uptime.json?days=1", timeout=10)
    assert r.status_code == 200, r.text
    day: dict[str, Any] = next(c for c in r.json()["components"] if c["id"] == cid)["days"][-1]
    return day


def _log(root: Path, gateway: str) -> str:
    return (root / f"{gateway}.log").read_text(errors="replace")


def _events(got: list[Delivery]) -> Counter[tuple[str, str]]:
    """(event, incident id or component id:new status) of each delivery."""
    out: Counter[tuple[str, str]] = Counter()
    for d in got:
        body = d.json
        if "component_update" in body:
            u = body["component_update"]
            what = f"{u['component_id']}:{u['new_status']}"
        else:
            what = (body.get("incident") or body.get("component") or {}).get("id", "")
        out[(body["meta"]["event"], what)] += 1
    return out


def test_status_state_is_shared_by_every_gateway(tmp_path: Path) -> None:
    with receiver() as rec, running(tmp_path, nodes=1, gateways=2,
                                    env={"BASTION_WEBHOOK_ALLOW": "127.0.0.1"}) as cluster:
        url1, url2 = cluster.url("gateway-1"), cluster.url("gateway-2")
        # a subscriber registered on gateway 1 is known to gateway 2
        r = httpx.post(f"{url1}/admin/status/subscribers", json={"url": rec.url},
                       headers=AUTH, timeout=10)
        assert r.status_code == 201, r.text
        sub_id = r.json()["id"]
        assert _until(lambda: any(s["id"] == sub_id for s in httpx.get(
            f"{url2}/admin/status/subscribers", headers=AUTH, timeout=10).json()))

        # an incident posted on gateway 1: on gateway 2's page JSON and incidents API
        r = httpx.post(f"{url1}/admin/status/incidents", headers=AUTH, timeout=10,
                       json={"name": "Slow deposits", "body": "Looking into it.",
                             "components": ["ws-api"]})
        assert r.status_code == 201, r.text
        inc = r.json()["id"]
        assert _until(lambda: inc in _incident_ids(url2)), _incident_ids(url2)
        summary = httpx.get(f"{url2}/api/v2/summary.json", timeout=10).json()
        assert inc in {i["id"] for i in summary["incidents"]}, summary
        assert summary["page"]["id"] == httpx.get(f"{url1}/api/v2/summary.json",
                                                  timeout=10).json()["page"]["id"]
        # an update on gateway 2 reaches gateway 1
        r = httpx.post(f"{url2}/admin/status/incidents/{inc}/updates", headers=AUTH,
                       timeout=10, json={"status": "identified", "body": "Found it."})
        assert r.status_code == 200, r.text

        def updates_on_1() -> list[str]:
            r = httpx.get(f"{url1}/api/v2/incidents.json", timeout=10)
            found = [i for i in r.json()["incidents"] if i["id"] == inc]
            return [u["body"] for u in found[0]["incident_updates"]] if found else []

        assert _until(lambda: "Found it." in updates_on_1()), updates_on_1()

        # an override set on gateway 2 is shown on gateway 1, and cleared again
        r = httpx.put(f"{url2}/admin/status/components/rest-api/status", headers=AUTH,
                      timeout=10, json={"status": "partial_outage", "note": "LB trouble"})
        assert r.status_code == 200, r.text
        assert _until(lambda: _component(url1, "rest-api")["status"] == "partial_outage")
        time.sleep(0.3)  # some downtime to see in the uptime history
        r = httpx.put(f"{url2}/admin/status/components/rest-api/status", headers=AUTH,
                      timeout=10, json={"status": "operational"})
        assert r.status_code == 200, r.text
        assert _until(lambda: _component(url1, "rest-api")["status"] == "operational")

        # each change reached the receiver once, though both gateways emitted it
        want = {("incident.created", inc), ("incident.updated", inc),
                ("component.updated", "rest-api:partial_outage"),
                ("component.updated", "rest-api:operational")}
        try:
            rec.wait_for(lambda got: want <= set(_events(got)), timeout=20)
        except AssertionError:
            raise AssertionError(_events(rec.deliveries)) from None
        time.sleep(2.0)  # a second delivery, if any, would come from the other gateway now
        events = _events(rec.deliveries)
        assert events[("incident.created", inc)] == 1, events
        assert events[("incident.updated", inc)] == 1, events
        assert events[("component.updated", "rest-api:partial_outage")] == 1, events
        assert events[("component.updated", "rest-api:operational")] == 1, events
        assert len({d.headers["X-Bastion-Delivery"] for d in rec.deliveries}) == len(
            rec.deliveries)

        # gateway 1 killed and restarted with an empty data directory: the same incidents,
        # subscribers and uptime (history) as gateway 2
        down_before = _today(url2, "rest-api")
        assert down_before["worst_status"] == "partial_outage", down_before
        holder = [gw for gw in ("gateway-1", "gateway-2") if DELIVERS in _log(tmp_path, gw)]
        assert len(holder) == 1, holder  # one gateway delivers
        cluster.signal("gateway-1", signal.SIGKILL)
        shutil.rmtree(tmp_path / "gateway-1")
        cluster.restart("gateway-1")
        cluster.wait_gateway("gateway-1")
        assert inc in _incident_ids(url1)
        assert "Found it." in updates_on_1()
        subs = httpx.get(f"{url1}/admin/status/subscribers", headers=AUTH, timeout=10).json()
        assert [s["id"] for s in subs] == [sub_id], subs
        day = _today(url1, "rest-api")
        assert day["worst_status"] == "partial_outage", day
        assert day["down_ms"] >= 0.3 * 300 * 0.9, day  # 30 % of the >= 0.3 s partial outage
        # the webhook lease: if gateway 1 delivered, its lease expires and one gateway takes
        # it (gateway 2, or gateway 1 again when it is back first: logs are appended);
        # a change made now reaches the receiver once
        if holder == ["gateway-1"]:
            assert _until(lambda: _log(tmp_path, "gateway-2").count(DELIVERS)
                          + _log(tmp_path, "gateway-1").count(DELIVERS) >= 2, timeout=30)
        r = httpx.post(f"{url1}/admin/status/incidents", headers=AUTH, timeout=10,
                       json={"name": "After the restart", "body": "Still here.",
                             "components": []})
        assert r.status_code == 201, r.text
        again = ("incident.created", r.json()["id"])
        rec.wait_for(lambda got: again in _events(got), timeout=20)
        time.sleep(2.0)
        assert _events(rec.deliveries)[again] == 1, _events(rec.deliveries)

        # no quorum for the bucket: a clear 503, nothing half-applied, nothing left behind
        cluster.freeze_nats("bc")
        try:
            r = httpx.post(f"{url2}/admin/status/incidents", headers=AUTH, timeout=30,
                           json={"name": "Never shown", "body": "Lost.", "components": []})
        finally:
            cluster.thaw_nats("bc")
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "status_unavailable" and r.headers["retry-after"], r.text

        def names(url: str) -> set[str]:
            r = httpx.get(f"{url}/api/v2/incidents.json", timeout=10)
            return {i["name"] for i in r.json()["incidents"]}

        # it may have been stored once the quorum came back: then it is removed again
        assert _until(lambda: "Never shown" not in names(url2) | names(url1), timeout=30)
        # once NATS is back, a change made now is shared (the watches outlived the freeze)
        r = _until(lambda: (resp := httpx.post(
            f"{url2}/admin/status/incidents", headers=AUTH, timeout=30,
            json={"name": "After the freeze", "body": "Back.", "components": []}
        )).status_code == 201 and resp, timeout=30)
        assert r, "no incident could be opened after the freeze"
        assert _until(lambda: "After the freeze" in names(url1)), names(url1)
        assert "Never shown" not in names(url1) | names(url2)

        # the engine's only node down: status reads answer, and an operator's write on one
        # gateway still shows on the other
        cluster.signal("node-1a", signal.SIGKILL)
        for url in (url1, url2):
            for path in ("/api/v2/summary.json", "/api/v2/incidents.json", "/status"):
                assert httpx.get(url + path, timeout=10).status_code == 200, (url, path)
        r = httpx.post(f"{url1}/admin/status/incidents", headers=AUTH, timeout=10,
                       json={"name": "Engine restarting", "body": "Orders paused.",
                             "components": []})
        assert r.status_code == 201, r.text
        assert _until(lambda: "Engine restarting" in names(url2)), names(url2)
