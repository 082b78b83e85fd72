"""Webhook delivery to real local HTTP receivers: signed payloads, per-component filters,
retries with backoff, a failing subscriber disabled without delaying anyone else."""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path

import httpx

from bastion.status import Egress, RetryPolicy, StatusService, create_app
from status_support import receiver, serve, wait_until

TOKEN = "webhook-admin-token-91"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET = "s3cret-s3cret-s3cret"


#: the receivers below listen on loopback, which deliveries refuse unless allowed
LOOPBACK = Egress.parse("127.0.0.0/8")


def expected_signature(secret: str, delivery_headers: dict[str, str], body: bytes) -> str:
    ts = delivery_headers["X-Bastion-Timestamp"]
    return (
        "sha256=" + hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    )


def test_signed_delivery_filters_retries_and_disables_failing_subscriber(tmp_path: Path) -> None:
    svc = StatusService(tmp_path / "status.db")
    svc.tracker.register_market("BTC-USDT")
    svc.tracker.register_market("ETH-USDT")
    policy = RetryPolicy(max_attempts=4, base_delay_s=0.1, max_delay_s=1.0, timeout_s=1.0)
    app = create_app(svc, TOKEN, retry=policy, egress=LOOPBACK)
    with (
        receiver() as everything,
        receiver() as eth_only,
        receiver(status=500) as broken,
        serve(app) as url,
        httpx.Client(base_url=url, timeout=5) as client,
    ):

        def subscribe(target: str, **extra: object) -> dict:
            r = client.post(
                "/admin/status/subscribers", json={"url": target, **extra}, headers=AUTH
            )
            assert r.status_code == 201, r.text
            return r.json()

        all_sub = subscribe(everything.url, secret=SECRET)
        eth_sub = subscribe(eth_only.url, components=["market-eth-usdt"])
        broken_sub = subscribe(broken.url)
        dead_port = subscribe("http://127.0.0.1:9/unreachable")
        assert (
            len(eth_sub["secret"]) == 64
            and "secret" not in client.get("/admin/status/subscribers", headers=AUTH).json()[0]
        )

        t0 = time.monotonic()
        svc.tracker.observe_market_mode("BTC-USDT", "halted", "drill")
        observe_s = time.monotonic() - t0
        assert observe_s < 0.5  # retries take >= 0.7 s: delivery is off the caller's path

        got = everything.wait_for(
            lambda d: (
                {x.headers["X-Bastion-Event"] for x in d}
                >= {"component.updated", "incident.created"}
            ),
            timeout=3,
        )
        first = got[0]
        assert first.headers["X-Bastion-Signature"] == expected_signature(
            SECRET, first.headers, first.body
        )
        assert abs(int(first.headers["X-Bastion-Timestamp"]) - time.time()) < 30
        payload = first.json
        assert payload["meta"]["event"] == "component.updated"
        assert payload["meta"]["id"] == first.headers["X-Bastion-Delivery"]
        assert payload["page"]["id"] == svc.page["id"]
        assert payload["component_update"]["new_status"] == "major_outage"
        assert payload["component"]["id"] == "market-btc-usdt"
        good_delivered_at = got[0].at

        # The broken receiver is retried with growing gaps, then disabled with a reason.
        attempts = broken.wait_for(lambda d: len(d) >= 4, timeout=5)
        wait_until(
            lambda: not next(s for s in svc.subscribers.list() if s.id == broken_sub["id"]).enabled,
            timeout=5,
        )
        gaps = [b.at - a.at for a, b in zip(attempts, attempts[1:], strict=False)]
        assert gaps[0] >= 0.08 and gaps[1] >= 0.17 and gaps[2] >= 0.35, gaps
        assert good_delivered_at < attempts[-1].at  # nobody waited for the broken one
        listing = {s["id"]: s for s in client.get("/admin/status/subscribers", headers=AUTH).json()}
        assert listing[broken_sub["id"]]["enabled"] is False
        assert "4 failed attempts" in listing[broken_sub["id"]]["disabled_reason"]
        assert "HTTP 500" in listing[broken_sub["id"]]["disabled_reason"]
        assert listing[broken_sub["id"]]["disabled_at"]
        wait_until(
            lambda: not next(s for s in svc.subscribers.list() if s.id == dead_port["id"]).enabled,
            timeout=5,
        )
        assert (
            "delivery failed"
            in next(s for s in svc.subscribers.list() if s.id == dead_port["id"]).disabled_reason
        )
        assert len(broken.deliveries) == 4

        # Later events: the disabled one gets nothing, the filtered one only its component.
        assert eth_only.deliveries == []
        svc.tracker.observe_market_mode("ETH-USDT", "cancel_only", "drill 2")
        eth = eth_only.wait_for(lambda d: len(d) >= 2, timeout=3)
        assert {d.json["meta"]["event"] for d in eth} == {"component.updated", "incident.created"}
        assert all("market-eth-usdt" in d.body.decode() for d in eth)
        everything.wait_for(lambda d: any(b"ETH-USDT" in x.body for x in d), timeout=3)
        time.sleep(0.3)
        assert len(broken.deliveries) == 4

        # Re-enabled and healthy again: deliveries resume in order.
        broken.status = 200
        r = client.post(f"/admin/status/subscribers/{broken_sub['id']}/enable", headers=AUTH)
        assert r.status_code == 200 and r.json()["enabled"] is True
        svc.tracker.observe_market_mode("ETH-USDT", "open")
        broken.wait_for(
            lambda d: any(
                x.json["meta"]["event"] == "component.updated"
                and x.json["component"]["id"] == "market-eth-usdt"
                for x in d[4:]
            ),
            timeout=3,
        )

        everything.wait_for(
            lambda d: any(
                x.json["meta"]["event"] == "incident.updated"
                and x.json["incident"]["status"] == "monitoring"
                for x in d
            ),
            timeout=3,
        )
        time.sleep(0.2)
        r = client.delete(f"/admin/status/subscribers/{all_sub['id']}", headers=AUTH)
        assert r.status_code == 204
        before = len(everything.deliveries)
        svc.tracker.observe_market_mode("BTC-USDT", "open")
        broken.wait_for(lambda d: any(b"market-btc-usdt" in x.body for x in d[5:]), timeout=3)
        assert len(everything.deliveries) == before


def test_slow_receiver_does_not_delay_others(tmp_path: Path) -> None:
    svc = StatusService(tmp_path / "status.db")
    svc.tracker.register_market("BTC-USDT")
    policy = RetryPolicy(max_attempts=2, base_delay_s=0.1, timeout_s=2.0)
    app = create_app(svc, TOKEN, retry=policy, egress=LOOPBACK)
    with receiver() as fast, receiver() as slow, serve(app):
        slow.delay_s = 0.5  # answers, but only after a long pause
        svc.subscribers.add(slow.url)
        svc.subscribers.add(fast.url)
        t0 = time.monotonic()
        for i, mode in enumerate(("halted", "open", "halted")):
            svc.tracker.observe_market_mode("BTC-USDT", mode, f"flap {i}")
        assert time.monotonic() - t0 < 1.0  # the slow receiver costs the caller nothing
        fast_got = fast.wait_for(lambda d: len(d) >= 6, timeout=3)

        def statuses(got: list) -> list[str]:
            return [
                d.json["component_update"]["new_status"]
                for d in got
                if d.json["meta"]["event"] == "component.updated"
            ]

        assert statuses(fast_got) == ["major_outage", "operational", "major_outage"]
        slow_got = slow.wait_for(lambda d: len(d) >= 6, timeout=10)
        assert fast_got[5].at < slow_got[1].at  # all six arrived while the slow one was on its first
        assert [d.body for d in slow_got] == [d.body for d in fast_got]  # same order, nothing lost
