"""Webhook delivery off the request path: one bounded queue and one asyncio worker per
subscriber, so a slow or dead receiver delays only itself.

Each payload is signed: `X-Bastion-Signature: sha256=<hex HMAC-SHA256(secret, "<ts>." + body)>`
with `X-Bastion-Timestamp: <ts>` (Unix seconds), so receivers can reject forgeries and replays.
A delivery is retried with exponential backoff; when one exhausts its attempts the subscriber
is disabled (persisted, logged, visible in the operator API) until an operator re-enables it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from bastion.status import statuspage
from bastion.status.egress import Egress, Refused
from bastion.status.model import Change
from bastion.status.service import StatusService
from bastion.textnum import ascii_int

log = logging.getLogger("bastion.status.webhooks")

DELIVERED_EVENTS = ("component.", "incident.", "maintenance.")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Value of the `X-Bastion-Signature` header for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, max_age_s: int = 300) -> bool:
    """Receiver-side check: right signature and a timestamp no older than `max_age_s`."""
    ts = ascii_int(timestamp, max_digits=12)
    if ts is None or abs(time.time() - ts) > max_age_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff doubles from `base_delay_s` up to `max_delay_s`: 8 attempts over about 2 minutes."""

    max_attempts: int = 8
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    timeout_s: float = 5.0
    queue_size: int = 256

    def delay(self, failed_attempts: int) -> float:
        raw: float = min(self.max_delay_s, self.base_delay_s * 2.0 ** (failed_attempts - 1))
        return raw * random.uniform(0.9, 1.1)


@dataclass
class _Outbox:
    queue: deque[tuple[str, str, bytes]] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    dropped: int = 0


class WebhookDispatcher:
    """Fans service events out to webhook subscribers from a running event loop."""

    def __init__(self, service: StatusService, policy: RetryPolicy | None = None,
                 egress: Egress | None = None) -> None:
        self.service = service
        self.policy = policy or RetryPolicy()
        self.egress = egress or Egress()
        self._outboxes: dict[str, _Outbox] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._unsubscribe: Any = None
        #: whether this process delivers: in a cluster only the gateway holding the webhook
        #: lease does (every gateway sees the same changes), so each change goes out once
        self.active: Callable[[], bool] = lambda: True

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client = httpx.AsyncClient(timeout=self.policy.timeout_s, follow_redirects=False)
        self._unsubscribe = self.service.board.subscribe(self._on_change)

    async def stop(self) -> None:
        if self._unsubscribe:
            self._unsubscribe()
        tasks = [o.task for o in self._outboxes.values() if o.task]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._client:
            await self._client.aclose()

    def _on_change(self, change: Change) -> None:
        """Called in whatever thread changed the state: render, hand over to the loop, return."""
        if not change.kind.startswith(DELIVERED_EVENTS) or self._loop is None:
            return
        if not self.active():
            return
        event = statuspage.change_json(change, self.service.page["id"])
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._enqueue, event)

    def _enqueue(self, event: dict[str, Any]) -> None:
        body = msgspec.json.encode(
            {
                "meta": {
                    "event": event["type"],
                    "id": event["id"],
                    "generated_at": event["created_at"],
                },
                "page": self.service.page,
                **{
                    k: v
                    for k, v in event.items()
                    if k not in ("id", "type", "created_at", "component_ids")
                },
            }
        )
        touched = set(event["component_ids"])
        for sub in self.service.subscribers.list():
            if not sub.enabled or (
                sub.component_ids is not None and not touched & set(sub.component_ids)
            ):
                continue
            box = self._outboxes.setdefault(sub.id, _Outbox())
            if len(box.queue) >= self.policy.queue_size:
                box.queue.popleft()
                box.dropped += 1
                log.warning(
                    "webhook %s queue full; dropped oldest event (%d so far)", sub.id, box.dropped
                )
            box.queue.append((event["id"], event["type"], body))
            if box.task is None or box.task.done():
                box.task = asyncio.get_running_loop().create_task(self._worker(sub.id, box))

    async def _worker(self, sub_id: str, box: _Outbox) -> None:
        failed = 0
        while box.queue:
            subs = {s.id: s for s in self.service.subscribers.list()}
            sub = subs.get(sub_id)
            if sub is None or not sub.enabled:
                box.queue.clear()
                return
            event_id, kind, body = box.queue[0]
            ok, why = await self._post(sub.url, sub.secret, event_id, kind, body)
            self.service.subscribers.record_delivery(sub_id, ok)
            if ok:
                box.queue.popleft()
                failed = 0
                continue
            failed += 1
            if failed >= self.policy.max_attempts:
                reason = f"{failed} failed attempts to deliver {kind} {event_id}; last error: {why}"
                log.warning("disabling webhook subscriber %s (%s): %s", sub_id, sub.url, reason)
                with contextlib.suppress(Exception):  # logged above; shared when it can be
                    await asyncio.to_thread(self.service.write,
                                            self.service.subscribers.set_enabled, sub_id,
                                            False, reason)
                box.queue.clear()
                return
            await asyncio.sleep(self.policy.delay(failed))

    async def _post(
        self, url: str, secret: str, event_id: str, kind: str, body: bytes
    ) -> tuple[bool, str]:
        assert self._client is not None
        ts = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "bastion-status-webhook/1",
            "X-Bastion-Event": kind,
            "X-Bastion-Delivery": event_id,
            "X-Bastion-Timestamp": ts,
            "X-Bastion-Signature": sign(secret, ts, body),
        }
        # errors stay generic: the operator API shows them, and details such as "connection
        # refused" vs "timed out" would map which internal ports are open
        try:
            target, host = await self.egress.resolve(url)
        except Refused as exc:
            log.warning("webhook to %s refused: %s", url, exc)
            return False, str(exc)
        headers["Host"] = httpx.URL(url).netloc.decode("ascii")
        try:
            resp = await self._client.post(target, content=body, headers=headers,
                                           extensions={"sni_hostname": host})
        except httpx.TimeoutException:
            return False, "delivery timed out"
        except httpx.HTTPError:
            return False, "delivery failed (could not connect or send)"
        if 200 <= resp.status_code < 300:
            return True, ""
        return False, f"HTTP {resp.status_code}"

    def pending(self) -> dict[str, int]:
        """Queued events per subscriber, for the operator API."""
        return {k: len(v.queue) for k, v in self._outboxes.items()}
