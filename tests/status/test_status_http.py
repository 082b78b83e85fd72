"""End to end over a real uvicorn server: the engine's input API changes a market, the public
JSON, HTML, WebSocket, OKX and Atom interfaces show it; operators act over HTTP and the CLI."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner
from websockets.sync.client import connect

from bastion.cli.status import status_app
from bastion.status import StatusService, create_app
from status_support import serve, wait_until

TOKEN = "test-admin-token-7f3a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[StatusService, str, httpx.Client]]:
    svc = StatusService(tmp_path / "status.db", page_name="Bastion test")
    svc.tracker.register_market("BTC-USDT")
    svc.tracker.register_market("ETH-USDT")
    svc.tracker.register_asset("BTC")
    with (
        serve(create_app(svc, TOKEN, tick_interval_s=0.1)) as url,
        httpx.Client(base_url=url, timeout=5) as client,
    ):
        yield svc, url, client


def component(summary: dict, cid: str) -> dict:
    return next(c for c in summary["components"] if c["id"] == cid)


class WsCollector:
    """Reads `/ws/status` in a thread and keeps every message."""

    def __init__(self, url: str) -> None:
        self._stack = ExitStack()
        self.ws = self._stack.enter_context(
            connect(url.replace("http://", "ws://") + "/ws/status", open_timeout=5)
        )
        self.messages: list[dict] = [json.loads(self.ws.recv(timeout=5))]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for raw in self.ws:
                self.messages.append(json.loads(raw))
        except Exception:
            pass

    def close(self) -> None:
        self._stack.close()
        self.thread.join(timeout=5)


def test_halt_shows_within_two_seconds_then_resume_and_resolve(live) -> None:
    svc, url, client = live
    ws = WsCollector(url)
    assert ws.messages[0]["type"] == "snapshot"
    assert component(ws.messages[0]["summary"], "market-btc-usdt")["status"] == "operational"

    t0 = time.monotonic()
    threading.Thread(  # as the engine thread of the node would
        target=svc.tracker.observe_market_mode, args=("BTC-USDT", "halted", "funding index guard tripped")
    ).start()

    def json_shows_outage() -> dict | None:
        s = client.get("/api/v2/summary.json").json()
        hit = component(s, "market-btc-usdt")["status"] == "major_outage" and any(
            "market-btc-usdt" in [c["id"] for c in i["components"]] for i in s["incidents"]
        )
        return s if hit else None

    summary = wait_until(json_shows_outage, timeout=2.0, interval=0.01)
    json_latency = time.monotonic() - t0
    html = wait_until(
        lambda: (
            (r := client.get("/status").text)
            and 'id="component-market-btc-usdt" data-status="major_outage"' in r
            and "BTC-USDT trading: major outage" in r
            and r
        ),
        timeout=2.0,
        interval=0.01,
    )
    html_latency = time.monotonic() - t0
    wait_until(
        lambda: any(
            m["type"] == "component.updated"
            and m["component_update"]["new_status"] == "major_outage"
            for m in ws.messages
        ),
        timeout=2.0,
        interval=0.01,
    )
    ws_latency = time.monotonic() - t0
    print(
        f"halt visible: json {json_latency * 1000:.0f} ms, html {html_latency * 1000:.0f} ms, ws {ws_latency * 1000:.0f} ms"
    )
    assert max(json_latency, html_latency, ws_latency) < 2.0

    assert summary["status"]["indicator"] == "critical"
    (incident,) = summary["incidents"]
    assert incident["status"] == "investigating" and incident["impact"] == "critical"
    assert "funding index guard tripped" in incident["incident_updates"][0]["body"]
    assert "Active incidents" in html and "funding index guard tripped" in html
    assert (
        client.get("/api/v2/status.json").json()["status"]["description"] == "Major System Outage"
    )
    okx = client.get("/api/v5/system/status").json()
    assert okx["code"] == "0"
    (entry,) = okx["data"]
    assert entry["state"] == "ongoing" and entry["maintType"] == "3" and entry["serviceType"] == "5"
    assert entry["end"] == "" and int(entry["begin"]) > 0

    iid = incident["id"]
    r = client.post(
        f"/admin/status/incidents/{iid}/resolve", json={"body": "All fine"}, headers=AUTH
    )
    assert r.status_code == 409 and r.json()["code"] == "market_halted"
    r = client.post(
        f"/admin/status/incidents/{iid}/updates",
        json={
            "status": "identified",
            "body": "A bad funding index update was rejected; rolling back.",
        },
        headers=AUTH,
    )
    assert r.status_code == 200 and r.json()["status"] == "identified"

    t1 = time.monotonic()
    svc.tracker.observe_market_mode("BTC-USDT", "open", "rolled back")
    wait_until(
        lambda: (
            component(client.get("/api/v2/summary.json").json(), "market-btc-usdt")["status"]
            == "operational"
        ),
        timeout=2.0,
        interval=0.01,
    )
    print(f"resume visible: {(time.monotonic() - t1) * 1000:.0f} ms")
    unresolved = client.get("/api/v2/incidents/unresolved.json").json()["incidents"]
    assert [i["status"] for i in unresolved] == ["monitoring"]
    assert client.get("/api/v2/status.json").json()["status"]["indicator"] == "none"

    r = client.post(
        f"/admin/status/incidents/{iid}/resolve",
        json={"body": "Funding indices restored from the snapshot; trading resumed."},
        headers=AUTH,
    )
    assert r.status_code == 200, r.text
    assert client.get("/api/v2/incidents/unresolved.json").json()["incidents"] == []
    resolved = client.get("/api/v2/incidents.json").json()["incidents"][0]
    assert resolved["status"] == "resolved" and resolved["resolved_at"]
    assert [u["status"] for u in resolved["incident_updates"]] == [
        "resolved",
        "monitoring",
        "identified",
        "investigating",
    ]
    assert client.get("/api/v2/status.json").json()["status"]["indicator"] == "none"
    page = client.get("/status").text
    assert "Active incidents" not in page and "Resolved in the last 7 days" in page
    assert "Funding indices restored from the snapshot" in page
    wait_until(lambda: any(m["type"] == "incident.resolved" for m in ws.messages), timeout=2.0)
    assert client.get("/api/v5/system/status").json()["data"] == []
    done = client.get("/api/v5/system/status", params={"state": "completed"}).json()["data"]
    assert [d["state"] for d in done] == ["completed"] and done[0]["end"] != ""
    ws.close()


def test_statuspage_shapes_and_atom_feed(live) -> None:
    svc, url, client = live
    svc.tracker.observe_market_mode("ETH-USDT", "cancel_only", "oracle stale")
    soon = svc.board.clock() + 3_600_000
    svc.operator.schedule_maintenance(
        "Wallet upgrade", "Node upgrade.", ["wallet-btc"], soon, soon + 3_600_000
    )

    summary = client.get("/api/v2/summary.json")
    assert summary.headers["access-control-allow-origin"] == "*"
    s = summary.json()
    assert set(s) == {"page", "status", "components", "incidents", "scheduled_maintenances"}
    assert (
        set(s["page"]) >= {"id", "name", "url", "updated_at"}
        and s["page"]["name"] == "Bastion test"
    )
    assert s["status"]["indicator"] in ("none", "minor", "major", "critical")
    statuses = {
        "operational",
        "degraded_performance",
        "partial_outage",
        "major_outage",
        "under_maintenance",
    }
    for c in s["components"]:
        assert {"id", "name", "status", "group_id", "position", "updated_at"} <= set(c)
        assert c["status"] in statuses
    markets = next(c for c in s["components"] if c["id"] == "markets")
    assert markets["group"] is True and markets["status"] == "partial_outage"
    assert set(markets["components"]) == {"market-btc-usdt", "market-eth-usdt"}
    (inc,) = s["incidents"]
    assert {
        "id",
        "name",
        "status",
        "impact",
        "created_at",
        "resolved_at",
        "incident_updates",
        "components",
    } <= set(inc)
    assert {"id", "status", "body", "display_at"} <= set(inc["incident_updates"][0])
    (m,) = s["scheduled_maintenances"]
    assert m["status"] == "scheduled" and m["scheduled_for"] and m["scheduled_until"]
    assert m["advisory"] == {"phase": "reminder_24h", "action": "continue"}
    assert (
        client.get("/api/v2/scheduled-maintenances/upcoming.json").json()["scheduled_maintenances"][
            0
        ]["id"]
        == m["id"]
    )
    assert (
        client.get("/api/v2/scheduled-maintenances/active.json").json()["scheduled_maintenances"]
        == []
    )
    assert (
        len(client.get("/api/v2/scheduled-maintenances.json").json()["scheduled_maintenances"]) == 1
    )
    assert len(client.get("/api/v2/components.json").json()["components"]) == len(s["components"])
    uptime = client.get("/api/v2/uptime.json", params={"days": 90}).json()["components"]
    assert all(len(c["days"]) == 90 for c in uptime)

    okx = client.get("/api/v5/system/status").json()["data"]
    assert sorted((d["state"], d["maintType"]) for d in okx) == [
        ("ongoing", "3"),
        ("scheduled", "1"),
    ]
    assert {d["env"] for d in okx} == {"1"}

    r = client.post(
        "/admin/status/components", json={"name": "Fiat on-ramp", "group": "Partners"}, headers=AUTH
    )
    assert r.status_code == 201, r.text
    added = r.json()
    comps = client.get("/api/v2/components.json").json()["components"]
    group = next(c for c in comps if c["group"] and c["name"] == "Partners")
    assert group["components"] == [added["id"]] and added["group_id"] == group["id"]
    r = client.put(
        f"/admin/status/components/{added['id']}/status",
        json={"status": "partial_outage", "note": "Partner bank is down"},
        headers=AUTH,
    )
    assert r.status_code == 200 and r.json()["status"] == "partial_outage"
    unresolved = client.get("/api/v2/incidents/unresolved.json").json()["incidents"]
    assert any(added["id"] in [c["id"] for c in i["components"]] for i in unresolved)

    feed = client.get("/status/feed.atom")
    assert feed.headers["content-type"].startswith("application/atom+xml")
    ns = {"a": "http://www.w3.org/2005/Atom"}
    root = ET.fromstring(feed.content)
    titles = [e.findtext("a:title", namespaces=ns) for e in root.findall("a:entry", ns)]
    assert any("ETH-USDT trading: partial outage" in t for t in titles)
    assert any(t.startswith("Maintenance: Wallet upgrade") for t in titles)
    assert root.find("a:link[@rel='self']", ns).get("href") == f"{url}/status/feed.atom"
    contents = [e.find("a:content", ns) for e in root.findall("a:entry", ns)]
    assert all(c.get("type") == "html" for c in contents)
    assert any("oracle stale" in c.text for c in contents)


def test_cli_incident_and_maintenance_lifecycle(live, monkeypatch: pytest.MonkeyPatch) -> None:
    svc, url, client = live
    runner = CliRunner()
    monkeypatch.setenv("BASTION_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("BASTION_URL", url)

    def cli(*args: str) -> str:
        result = runner.invoke(status_app, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    out = cli(
        "incident",
        "open",
        "Slow order entry",
        "--body",
        "Investigating latency.",
        "-c",
        "rest-api",
        "--component-status",
        "degraded_performance",
    )
    (inc,) = client.get("/api/v2/incidents/unresolved.json").json()["incidents"]
    assert inc["id"] in out and inc["impact"] == "minor"
    assert (
        component(client.get("/api/v2/summary.json").json(), "rest-api")["status"]
        == "degraded_performance"
    )
    cli("incident", "update", inc["id"], "--status", "identified", "--body", "A noisy neighbour.")
    cli("incident", "resolve", inc["id"], "--body", "Moved to a quiet host.")
    s = client.get("/api/v2/summary.json").json()
    assert s["incidents"] == [] and component(s, "rest-api")["status"] == "operational"

    start = datetime.now(UTC) + timedelta(hours=2)
    out = cli(
        "maintenance",
        "schedule",
        "Engine upgrade",
        "--body",
        "Shadow-verified engine.",
        "--start",
        start.isoformat(),
        "--end",
        (start + timedelta(hours=1)).isoformat(),
        "-c",
        "market-btc-usdt",
    )
    (m,) = client.get("/api/v2/scheduled-maintenances/upcoming.json").json()[
        "scheduled_maintenances"
    ]
    assert m["id"] in out
    assert client.get("/api/v5/system/status").json()["data"][0]["state"] == "scheduled"
    cli("maintenance", "start", m["id"], "--body", "Started early.")
    svc.tracker.observe_market_mode("BTC-USDT", "cancel_only", "upgrade")
    s = wait_until(
        lambda: (
            (j := client.get("/api/v2/summary.json").json())
            and component(j, "market-btc-usdt")["status"] == "under_maintenance"
            and j
        )
    )
    assert s["incidents"] == []  # planned: no incident
    assert "Started early." in client.get("/status").text
    assert client.get("/api/v5/system/status").json()["data"][0]["state"] == "ongoing"
    svc.tracker.observe_market_mode("BTC-USDT", "open", "upgrade done")
    cli("maintenance", "complete", m["id"])
    assert (
        client.get("/api/v5/system/status", params={"state": "completed"}).json()["data"][0][
            "title"
        ]
        == "Engine upgrade"
    )
    assert client.get("/api/v2/summary.json").json()["scheduled_maintenances"] == []

    bad = runner.invoke(
        status_app, ["incident", "resolve", "nope", "--body", "x", "--admin-token", "wrong"]
    )
    assert bad.exit_code == 1 and "unauthorized" in bad.output
    bad = runner.invoke(status_app, ["incident", "resolve", "nope", "--body", "x"])
    assert bad.exit_code == 1 and "incident_not_found" in bad.output
    monkeypatch.delenv("BASTION_ADMIN_TOKEN")
    bad = runner.invoke(status_app, ["incident", "resolve", "nope", "--body", "x"])
    assert bad.exit_code == 2 and "missing admin token" in bad.output


def test_bad_input_to_every_operator_endpoint_is_a_clear_4xx(live) -> None:
    svc, url, client = live
    svc.tracker.observe_market_mode("BTC-USDT", "halted", "drill")
    (halted_incident,) = client.get("/api/v2/incidents/unresolved.json").json()["incidents"]
    hid = halted_incident["id"]
    done = client.post(
        "/admin/status/incidents", json={"name": "Old", "body": "x"}, headers=AUTH
    ).json()
    client.post(
        f"/admin/status/incidents/{done['id']}/resolve", json={"body": "done"}, headers=AUTH
    )
    soon = int(time.time() * 1000) + 3_600_000
    maint = client.post(
        "/admin/status/maintenances",
        json={
            "name": "M",
            "body": "b",
            "components": ["rest-api"],
            "scheduled_for": soon,
            "scheduled_until": soon + 1000,
        },
        headers=AUTH,
    ).json()
    before = client.get("/api/v2/summary.json").json()
    before_incidents = client.get("/api/v2/incidents.json").json()["incidents"]
    inc = "/admin/status/incidents"
    mnt = "/admin/status/maintenances"
    good_m = {
        "name": "M",
        "body": "b",
        "components": ["rest-api"],
        "scheduled_for": soon,
        "scheduled_until": soon + 1,
    }
    huge = {"name": "x", "body": "y" * (70 * 1024)}
    cases: list[tuple[str, str, object, dict | None, int, str]] = [
        ("POST", inc, {"name": "x", "body": "y"}, {}, 401, "unauthorized"),
        (
            "POST",
            inc,
            {"name": "x", "body": "y"},
            {"Authorization": "Bearer nope"},
            401,
            "unauthorized",
        ),
        ("POST", inc, {"name": "x", "body": "y"}, {"Authorization": TOKEN}, 401, "unauthorized"),
        ("POST", inc, b"{not json", None, 400, "invalid_json"),
        ("POST", inc, [1, 2], None, 422, "invalid_request"),
        ("POST", inc, {"name": "x"}, None, 422, "invalid_request"),
        ("POST", inc, {"name": "x", "body": "y", "extra": 1}, None, 422, "invalid_request"),
        ("POST", inc, {"name": "", "body": "y"}, None, 422, "invalid_request"),
        ("POST", inc, {"name": "x" * 201, "body": "y"}, None, 422, "invalid_request"),
        ("POST", inc, {"name": 5, "body": "y"}, None, 422, "invalid_request"),
        (
            "POST",
            inc,
            {"name": "x", "body": "y", "components": ["nope"]},
            None,
            422,
            "unknown_component",
        ),
        ("POST", inc, {"name": "x", "body": "y", "impact": "huge"}, None, 422, "invalid_request"),
        (
            "POST",
            inc,
            {"name": "x", "body": "y", "status": "resolved"},
            None,
            422,
            "invalid_request",
        ),
        (
            "POST",
            inc,
            {"name": "x", "body": "y", "component_status": "fine"},
            None,
            422,
            "invalid_request",
        ),
        ("POST", inc, {"name": "x", "body": "   "}, None, 422, "invalid_body"),
        (
            "POST",
            inc,
            {
                "name": "x",
                "body": "y",
                "components": ["market-btc-usdt"],
                "component_status": "operational",
            },
            None,
            409,
            "market_halted",
        ),
        ("POST", inc, huge, None, 413, "body_too_large"),
        ("GET", inc, None, None, 405, "method_not_allowed"),
        (
            "POST",
            f"{inc}/nope/updates",
            {"status": "identified", "body": "x"},
            None,
            404,
            "incident_not_found",
        ),
        (
            "POST",
            f"{inc}/{maint['id']}/updates",
            {"status": "identified", "body": "x"},
            None,
            404,
            "incident_not_found",
        ),
        (
            "POST",
            f"{inc}/{hid}/updates",
            {"status": "fixed", "body": "x"},
            None,
            422,
            "invalid_request",
        ),
        (
            "POST",
            f"{inc}/{hid}/updates",
            {"status": "identified", "body": ""},
            None,
            422,
            "invalid_request",
        ),
        (
            "POST",
            f"{inc}/{hid}/updates",
            {"status": "monitoring", "body": "x", "component_status": "operational"},
            None,
            409,
            "market_halted",
        ),
        (
            "POST",
            f"{inc}/{hid}/updates",
            {"status": "resolved", "body": "x"},
            None,
            409,
            "market_halted",
        ),
        (
            "POST",
            f"{inc}/{done['id']}/updates",
            {"status": "monitoring", "body": "x"},
            None,
            409,
            "incident_resolved",
        ),
        (
            "POST",
            f"{inc}/{hid}/updates",
            {"status": "identified", "body": "x"},
            {},
            401,
            "unauthorized",
        ),
        ("POST", f"{inc}/nope/resolve", {"body": "x"}, None, 404, "incident_not_found"),
        ("POST", f"{inc}/{hid}/resolve", {}, None, 422, "invalid_request"),
        ("POST", f"{inc}/{hid}/resolve", {"body": "x"}, None, 409, "market_halted"),
        (
            "POST",
            mnt,
            {**good_m, "scheduled_for": "2030-01-01T00:00:00"},
            None,
            422,
            "invalid_request",
        ),
        ("POST", mnt, {**good_m, "scheduled_for": "tomorrow"}, None, 422, "invalid_request"),
        ("POST", mnt, {**good_m, "scheduled_for": -5}, None, 422, "invalid_request"),
        ("POST", mnt, {**good_m, "scheduled_until": soon - 1}, None, 422, "invalid_window"),
        (
            "POST",
            mnt,
            {**good_m, "scheduled_for": 1000, "scheduled_until": 2000},
            None,
            422,
            "window_in_past",
        ),
        ("POST", mnt, {**good_m, "components": []}, None, 422, "invalid_request"),
        ("POST", mnt, {**good_m, "components": ["nope"]}, None, 422, "unknown_component"),
        ("POST", mnt, good_m, {"Authorization": "Bearer x"}, 401, "unauthorized"),
        ("POST", f"{mnt}/nope/start", {}, None, 404, "maintenance_not_found"),
        ("POST", f"{mnt}/{hid}/start", {}, None, 404, "maintenance_not_found"),
        ("POST", f"{mnt}/{maint['id']}/complete", {}, None, 409, "invalid_transition"),
        ("POST", f"{mnt}/{maint['id']}/verify", {}, None, 409, "invalid_transition"),
        ("POST", f"{mnt}/{maint['id']}/start", {"body": 7}, None, 422, "invalid_request"),
        ("POST", f"{mnt}/{maint['id']}/start", {}, {}, 401, "unauthorized"),
        ("POST", "/admin/status/components", {}, None, 422, "invalid_request"),
        ("POST", "/admin/status/components", {"name": ""}, None, 422, "invalid_request"),
        (
            "POST",
            "/admin/status/components",
            {"name": "x", "group": "g" * 101},
            None,
            422,
            "invalid_request",
        ),
        ("POST", "/admin/status/components", {"name": "x"}, {}, 401, "unauthorized"),
        ("GET", "/admin/status/components", None, {}, 401, "unauthorized"),
        (
            "PUT",
            "/admin/status/components/nope/status",
            {"status": "major_outage"},
            None,
            404,
            "component_not_found",
        ),
        (
            "PUT",
            "/admin/status/components/rest-api/status",
            {"status": "fine"},
            None,
            422,
            "invalid_request",
        ),
        (
            "PUT",
            "/admin/status/components/market-btc-usdt/status",
            {"status": "operational"},
            None,
            409,
            "market_halted",
        ),
        (
            "PUT",
            "/admin/status/components/rest-api/status",
            {"status": "major_outage"},
            {},
            401,
            "unauthorized",
        ),
        (
            "POST",
            "/admin/status/subscribers",
            {"url": "ftp://example.com/x"},
            None,
            422,
            "invalid_url",
        ),
        (
            "POST",
            "/admin/status/subscribers",
            {"url": "not a url at all"},
            None,
            422,
            "invalid_url",
        ),
        (
            "POST",
            "/admin/status/subscribers",
            {"url": "http://127.0.0.1/x", "secret": "short"},
            None,
            422,
            "invalid_request",
        ),
        (
            "POST",
            "/admin/status/subscribers",
            {"url": "http://127.0.0.1/x", "components": ["nope"]},
            None,
            422,
            "unknown_component",
        ),
        (
            "POST",
            "/admin/status/subscribers",
            {"url": "http://127.0.0.1/x"},
            {},
            401,
            "unauthorized",
        ),
        ("GET", "/admin/status/subscribers", None, {}, 401, "unauthorized"),
        ("DELETE", "/admin/status/subscribers/nope", None, None, 404, "subscriber_not_found"),
        ("POST", "/admin/status/subscribers/nope/enable", None, None, 404, "subscriber_not_found"),
        ("GET", "/api/v2/uptime.json?days=abc", None, None, 400, "invalid_days"),
        ("GET", "/api/v2/uptime.json?days=0", None, None, 422, "invalid_days"),
        ("GET", "/api/v5/system/status?state=nope", None, None, 400, "invalid_state"),
        ("GET", "/api/v2/nope.json", None, None, 404, "not_found"),
    ]
    for method, path, body, headers, status, code in cases:
        kwargs: dict = {"headers": AUTH if headers is None else headers}
        if isinstance(body, bytes):
            kwargs["content"] = body
        elif body is not None:
            kwargs["json"] = body
        r = client.request(method, path, **kwargs)
        where = f"{method} {path} {str(body)[:80]}"
        assert r.status_code == status, (where, r.status_code, r.text)
        data = r.json()
        assert data["code"] == code, (where, data)
        assert isinstance(data["message"], str) and data["message"], where
    after = client.get("/api/v2/summary.json").json()
    assert after["components"] == before["components"]
    assert client.get("/api/v2/incidents.json").json()["incidents"] == before_incidents
    assert (
        len(client.get("/api/v2/scheduled-maintenances.json").json()["scheduled_maintenances"]) == 1
    )
    assert client.get("/admin/status/subscribers", headers=AUTH).json() == []


def test_slow_websocket_client_gets_a_fresh_snapshot_instead_of_a_backlog(tmp_path: Path) -> None:
    from bastion.status.live import StatusHub

    svc = StatusService(tmp_path / "status.db")
    hub = StatusHub(svc, queue_size=3)
    queue: asyncio.Queue[bytes] = asyncio.Queue(3)
    hub._clients.add(queue)
    for i in range(5):
        hub._fanout(json.dumps({"type": "component.updated", "n": i}).encode())
    backlog = [json.loads(queue.get_nowait()) for _ in range(queue.qsize())]
    assert backlog[0]["type"] == "snapshot"  # replaced the three it could not hold
    assert [m.get("n") for m in backlog[1:]] == [4]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
FIELDS = [
    "name",
    "body",
    "components",
    "status",
    "impact",
    "component_status",
    "scheduled_for",
    "scheduled_until",
    "group",
    "description",
    "note",
    "secret",
]
# No "url": a fuzzed subscriber must never make the test POST to some real host.
BODIES = JSON_VALUES | st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES | st.text(), max_size=6)


def test_fuzzed_operator_bodies_never_cause_a_5xx(live) -> None:
    svc, url, client = live
    inc = client.post(
        "/admin/status/incidents", json={"name": "n", "body": "b"}, headers=AUTH
    ).json()
    soon = int(time.time() * 1000) + 3_600_000
    m = client.post(
        "/admin/status/maintenances",
        json={
            "name": "M",
            "body": "b",
            "components": ["rest-api"],
            "scheduled_for": soon,
            "scheduled_until": soon + 1,
        },
        headers=AUTH,
    ).json()
    paths = [
        ("POST", "/admin/status/incidents"),
        ("POST", f"/admin/status/incidents/{inc['id']}/updates"),
        ("POST", f"/admin/status/incidents/{inc['id']}/resolve"),
        ("POST", "/admin/status/maintenances"),
        ("POST", f"/admin/status/maintenances/{m['id']}/start"),
        ("POST", "/admin/status/components"),
        ("PUT", "/admin/status/components/rest-api/status"),
        ("POST", "/admin/status/subscribers"),
    ]

    @settings(max_examples=150, deadline=None)
    @given(target=st.sampled_from(paths), body=BODIES)
    def check(target: tuple[str, str], body: object) -> None:
        r = client.request(target[0], target[1], json=body, headers=AUTH)
        assert r.status_code < 500, (target, body, r.text)
        if r.status_code >= 400:
            assert set(r.json()) == {"code", "message"}

    check()


def test_every_refusal_is_documented_in_the_openapi_document(
    live: tuple[StatusService, str, httpx.Client],
) -> None:
    """The status routes are in the gateway's route table: each code a bad request gets here is
    listed for its operation, under its HTTP status, in `/openapi.json`."""
    from bastion.api.openapi import build_spec

    svc, _, client = live
    paths = build_spec()["paths"]
    cid = svc.view().components[0].id
    tries = [
        ("post", "/admin/status/incidents", "/admin/status/incidents", {}, None),
        ("post", "/admin/status/incidents", "/admin/status/incidents", AUTH, b"{"),
        ("post", "/admin/status/incidents", "/admin/status/incidents", AUTH, b'{"name": 1}'),
        ("post", "/admin/status/incidents", "/admin/status/incidents", AUTH,
         b'{"name": "x", "body": "y", "components": ["nope"]}'),
        ("post", "/admin/status/incidents/{id}/updates", "/admin/status/incidents/zz/updates",
         AUTH, b'{"status": "identified", "body": "b"}'),
        ("post", "/admin/status/maintenances/{id}/start", "/admin/status/maintenances/zz/start",
         AUTH, b"{}"),
        ("delete", "/admin/status/subscribers/{id}", "/admin/status/subscribers/zz", AUTH, None),
        ("put", "/admin/status/components/{id}/status", "/admin/status/components/zz/status",
         AUTH, b'{"status": "degraded_performance"}'),
        ("put", "/admin/status/components/{id}/status", f"/admin/status/components/{cid}/status",
         AUTH, b'{"status": "sideways"}'),
        ("get", "/api/v2/uptime.json", "/api/v2/uptime.json?days=x", {}, None),
        ("get", "/api/v5/system/status", "/api/v5/system/status?state=x", {}, None),
    ]
    seen = set()
    for method, doc_path, url, headers, body in tries:
        r = client.request(method.upper(), url, headers=headers, content=body)
        assert r.status_code >= 400, (url, r.status_code, r.text)
        code = r.json()["code"]
        seen.add(code)
        documented = paths[doc_path][method]["responses"][str(r.status_code)]["description"]
        assert f"`{code}`" in documented, (method, doc_path, r.status_code, code, documented)
    assert {"unauthorized", "invalid_json", "invalid_request", "unknown_component",
            "incident_not_found", "maintenance_not_found", "subscriber_not_found",
            "component_not_found", "invalid_days", "invalid_state"} <= seen
