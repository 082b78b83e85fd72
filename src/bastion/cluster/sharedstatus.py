"""The status state every gateway of a shard shares, so a gateway holds none of its own.

- **Operator records** (incidents, maintenances, overrides, custom components and groups,
  webhook subscribers: ``bastion.status.shared``) live in the replicated KV bucket
  ``bastion_<shard>_status``. A verb runs as a dry run (rolled back, its records captured);
  the records are stored in the bucket, compare-and-set on the revision this gateway holds,
  and only then applied here, exactly as every other gateway applies them from its watch
  (``shared.apply_record``, in order, on one worker thread). If the bucket does not confirm
  them, the verb answers 503 ``status_unavailable`` and nothing changed here; a record changed
  meanwhile on another gateway makes the verb run again on the newer one.
- **Derived state** (market statuses, auto incidents) is derived by every gateway from the same
  engine events; an auto incident's id comes from its cause, so an operator's update to it is
  shared like any incident.
- **Uptime history**: every status transition is also written to
  ``bastion_<shard>_status_history`` (entries kept 92 days), create-only under a key made of
  the component, the cause's timestamp and the status, so a transition derived by every
  gateway is stored once; a gateway restarted with an empty data directory reads it back.
  Transitions from this gateway's own signals (its API health, its view of the node's acks)
  carry its clock: they are shared too, so the history is the union of what the gateways saw.
- **Webhooks go out once per cluster**: only the gateway holding the lease in
  ``bastion_<shard>_status_lease`` (TTL ``lease_ttl``) delivers. Deliveries queued on a holder
  that dies, and changes made while nobody holds the lease (at most ``lease_ttl``), are not
  delivered: subscribers reconcile from ``/api/v2/incidents.json``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import secrets
import threading
import time

from bastion.cluster.config import ClusterConfig
from bastion.cluster.kvrecords import Conflict, KvRecords, first_value
from bastion.cluster.lease import Holder, Lease
from bastion.journal.natsloop import NatsLoop
from bastion.status.errors import StatusConflict, unavailable
from bastion.status.service import StatusService
from bastion.status.shared import apply_history, apply_record, history_key
from bastion.status.uptime import DAY_MS
from bastion.status.webhooks import WebhookDispatcher

log = logging.getLogger("bastion.cluster.status")

HISTORY_DAYS = 92
#: the status page's id, the same on every gateway
PAGE_KEY = "page"


class SharedStatus:
    def __init__(self, nats: NatsLoop, config: ClusterConfig, gateway: str, *,
                 write_wait: float = 3.0, lease_ttl: float = 5.0,
                 resync_every: float = 30.0) -> None:
        self.nats = nats
        #: how long a verb may wait for the bucket (an election) before it fails with 503
        self.write_wait = write_wait
        self.lease_ttl = lease_ttl
        self.records = KvRecords(nats, config.status_bucket, config.replicas, "status bucket",
                                 resync_every=resync_every)
        self.history = KvRecords(nats, config.status_history_bucket, config.replicas,
                                 "status history bucket", resync_every=resync_every,
                                 max_age=HISTORY_DAYS * DAY_MS / 1000)
        self.lease = Lease(nats.js, config.status_lease_bucket, lease_ttl, lease_ttl / 5,
                           Holder(gateway, ""))
        self.service: StatusService | None = None
        #: records from the other gateways are applied in order, off the event loop (a
        #: local write holds the board's lock while it waits for the bucket)
        self._applier = concurrent.futures.ThreadPoolExecutor(1, "status-apply")
        self._lease_task: asyncio.Task[None] | None = None  # on the NATS loop
        #: the revision of each record applied here (what a compare-and-set expects)
        self._applied: dict[str, int] = {}
        self._apply_lock = threading.Lock()

    async def attach(self, service: StatusService, webhooks: WebhookDispatcher) -> None:
        """Load what the buckets hold into ``service``, follow them, and share what this
        gateway writes from now on (call from the API's loop before serving)."""
        self.service = service
        await self.nats.call(self.records.open())
        await self.nats.call(self.history.open())
        await self.nats.call(self.lease.open())
        page = await self.nats.call(self._page_id(service.board.page["id"]))
        if page != service.board.page["id"]:  # one page id for the cluster (webhook payloads)
            with service.board.tx():
                service.board.page["id"] = page
                service.board.store.put_signal("page", {"id": page})
        loop = asyncio.get_running_loop()
        await self.history.follow(self._on_history)
        await self.records.follow(self._on_record)
        await loop.run_in_executor(self._applier, lambda: None)  # the initial state is in
        own = service.board.store.history_since(
            (service.board.clock() // DAY_MS - HISTORY_DAYS) * DAY_MS)
        service.board.history_sink = self._share_history
        service.board.writer = self.write
        for row in own:  # what this gateway recorded before (or without) the bucket
            self._share_history(*row)
        webhooks.active = self.lease.valid
        self.nats.call_soon(self._start_lease)
        log.info("status state: %d record(s) from bucket %s, %d history row(s)",
                 len(self.records.revs), self.records.bucket, len(self.history.revs))

    async def _page_id(self, mine: str) -> str:
        page = await first_value(self.records.kv, PAGE_KEY, mine.encode(),
                                 f"status bucket {self.records.bucket}")
        return page.decode()

    async def close(self) -> None:
        if self.service is not None:
            self.service.board.writer = None
            self.service.board.history_sink = None
        await self.records.close()
        await self.history.close()
        await self.nats.call(self._stop_lease())
        self._applier.shutdown(wait=False)

    # --- from other gateways ------------------------------------------------------------------

    def _on_record(self, key: str, revision: int, value: bytes | None) -> None:
        self._applier.submit(self._apply, key, revision, value)

    def _on_history(self, key: str, revision: int, value: bytes | None) -> None:
        self._applier.submit(self._apply_history, key, value)

    def _apply(self, key: str, revision: int, value: bytes | None) -> None:
        """Apply revision ``revision`` of record ``key`` unless this gateway applied it or a
        later one (its own write, applied at once, comes back from the watch later)."""
        assert self.service is not None
        with self._apply_lock:
            if revision <= self._applied.get(key, 0):
                return
            self._applied[key] = revision
            try:
                apply_record(self.service, key, value)
            except Exception:
                log.exception("status record %s from the bucket not applied here", key)

    def _apply_history(self, key: str, value: bytes | None) -> None:
        assert self.service is not None
        try:
            apply_history(self.service, key, value)
        except Exception:
            log.exception("status history %s from the bucket not applied here", key)

    # --- from this gateway --------------------------------------------------------------------

    def write(self, records: list[tuple[str, bytes | None]]) -> None:
        """The board's writer (on a worker thread, the board not locked): store every record
        compare-and-set on the revision this gateway applied (a newer one it has not applied
        yet is a conflict: the verb runs again once it is), then apply them here; or raise,
        and records stored before the failure arrive through the watch."""
        deadline = time.monotonic() + self.write_wait
        stored: list[tuple[str, int, bytes | None]] = []
        for key, payload in records:
            last = self._applied.get(key, 0)
            if payload is None and last == 0:
                continue  # never shared: nothing to remove
            publish = self.records.publish(key, payload, last, secrets.token_hex(12), deadline)
            try:
                stored.append((key, self.nats.run(publish, timeout=self.write_wait + 2.0),
                               payload))
            except Conflict:
                raise StatusConflict(key) from None
            except Exception as exc:
                log.warning("status record %s: the shared status store did not take it: %r",
                            key, exc)
                if last == 0 and payload is not None:
                    self.records.settle_create(key, payload)
                raise unavailable(
                    "the shared status store (NATS) did not confirm the change in time; "
                    "nothing changed on this gateway. A new record was not created; a change "
                    "to an existing one applies only if NATS stored it: check, then send it "
                    "again") from exc
        for key, revision, payload in stored:
            self._apply(key, revision, payload)

    def _share_history(self, component_id: str, ts_ms: int, status: str, reason: str) -> None:
        key = history_key(component_id, ts_ms, status)
        if key in self.history.revs:
            return
        self.nats.spawn(lambda: self._publish_history(key, reason.encode()))

    async def _publish_history(self, key: str, reason: bytes) -> None:
        try:  # create-only: the gateway that derived it first stores it
            await self.history.publish(key, reason, 0, f"h:{key}", time.monotonic() + 10.0)
        except Conflict:
            pass
        except Exception as exc:
            log.info("status history %s not shared: %r (kept on this gateway)", key, exc)

    # --- the webhook lease (on the NATS loop) -------------------------------------------------

    def _start_lease(self) -> None:
        self._lease_task = asyncio.get_running_loop().create_task(self._keep_lease())

    async def _stop_lease(self) -> None:
        if self._lease_task is not None:
            self._lease_task.cancel()
            await asyncio.gather(self._lease_task, return_exceptions=True)
        self.lease.drop()

    async def _keep_lease(self) -> None:
        while True:
            try:
                held = self.lease.valid()
                if (await self.lease.renew()) if held else (await self.lease.acquire()):
                    if not held:
                        log.info("status: this gateway delivers the webhooks (lease %s)",
                                 self.lease.bucket)
                elif held:
                    log.warning("status: webhook lease lost; another gateway delivers")
            except Exception as exc:
                log.debug("status webhook lease: %r", exc)
            await asyncio.sleep(self.lease_ttl / 5)
