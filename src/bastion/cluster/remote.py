"""The gateway's node: commands go to whichever node leads (NATS request/reply on the shard's
command subject, which only the leader serves); reads come from a local replica fed by the
stream. It has the same surface as ``bastion.node.Node`` so the API app runs unchanged.

Read-your-writes: a command is answered only once the local replica has applied it, with the
events the replica computed (the engine is deterministic, so they are the leader's events),
so every read that follows on this gateway sees state at or after it. During an election the
request is retried while nobody leads (nothing was written), up to ``election_wait``; after
that, or when the outcome is unknown (timeout), the caller gets a clear transient error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from bastion.api.security.keys import KeyStore
from bastion.cluster.config import ClusterConfig
from bastion.cluster.follower import Follower, bootstrap
from bastion.cluster.lease import Holder, Lease
from bastion.cluster.replica import Replica, Subscriber
from bastion.cluster.sharedkeys import SharedKeys
from bastion.cluster.sharedstatus import SharedStatus
from bastion.cluster.snapbucket import SnapshotBucket
from bastion.cluster.wire import MAX_COMMANDS, Reply, encode_request
from bastion.core import commands as C
from bastion.core import events as E
from bastion.core.engine import Engine
from bastion.journal.errors import DurabilityError
from bastion.journal.jetstream import JetStreamJournal, ensure_stream
from bastion.journal.natsloop import NatsLoop
from bastion.status.service import StatusService
from bastion.status.webhooks import WebhookDispatcher

log = logging.getLogger("bastion.cluster")

Results = list[list[E.Event]]
#: a command slower than this (seconds) is logged with where its time went
SLOW_COMMAND = 0.5


class _NoHistory:
    """What ``Gateway.attach`` sees as the journal: history before the snapshot is not local
    (open orders are seeded from the replica's engine instead)."""

    first_seq = 2**62


class RemoteNode:
    #: withdrawals go to custody from the leading engine node only (``Member``); a gateway
    #: keeps a custody client for deposit addresses (``bastion.withdrawals.runtime``)
    runs_withdrawal_worker = False

    def __init__(self, config: ClusterConfig, name: str = "gateway") -> None:
        self.config = config
        self.name = name
        self.journal = _NoHistory()
        self.replica: Replica | None = None
        self.failure: BaseException | None = None
        self._pending: list[tuple[C.Command, asyncio.Future[list[E.Event]]]] = []
        self._oldest: list[float] = []
        self._follow: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.retries = 0
        self._leader: str | None = None
        #: the highest seq a leader's heartbeat reported (for the replica-lag metric)
        self.leader_seq = 0
        self.shared_keys: SharedKeys | None = None
        self.shared_status: SharedStatus | None = None

    # --- Node surface -----------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        assert self.replica is not None, "gateway node not started"
        return self.replica.engine

    @property
    def last_seq(self) -> int:
        return self.engine.seq

    @property
    def epoch(self) -> int:
        return 0

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        assert self.replica is not None
        return self.replica.subscribe(callback)

    def pending_age(self) -> float:
        return time.monotonic() - min(self._oldest) if self._oldest else 0.0

    def lag(self) -> int | None:
        """Commands this gateway's replica is behind the leader's last heartbeat (None until
        a leader was heard)."""
        if self.replica is None or not self.leader_seq:
            return None
        return max(0, self.leader_seq - self.replica.seq)

    async def start(self, wait_for_state: float = 30.0) -> RemoteNode:
        self._loop = asyncio.get_running_loop()
        cfg = self.config
        self.nats = await asyncio.to_thread(NatsLoop, list(cfg.servers),
                                            name=f"gateway-{self.name}",
                                            connect_wait=cfg.connect_wait)
        await self.nats.call(ensure_stream(self.nats.js, cfg.stream, cfg.log_subject,
                                           cfg.replicas))
        self.snaps = SnapshotBucket(self.nats.js, cfg.snapshot_bucket, cfg.replicas)
        self.lease = await self.nats.call(
            Lease(self.nats.js, cfg.lease_bucket, cfg.lease_ttl, 0.0, Holder("", "")).open())
        self.journal_ = await asyncio.to_thread(JetStreamJournal, self.nats, cfg.stream,
                                                cfg.log_subject)
        self.replica = await bootstrap(self.nats, cfg, self.journal_, self.snaps,
                                       keep_events=65536)
        self.follower = Follower(self.nats, cfg, self.journal_, self.replica)
        await self.follower.start()
        await self.follower.watch_checkpoints()
        deadline = time.monotonic() + wait_for_state
        while True:  # serve only once caught up with the stream as it was at start
            tail = await self.nats.call(self.journal_.fetch_tail())
            await self.follower.catch_up(tail.stream_seq, 60)
            if self.replica.seq > 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        self._follow = asyncio.create_task(self._follow_loop())

        async def on_status(msg: Any) -> None:
            replica = self.replica
            await msg.respond(msgspec.json.encode({"seq": replica.seq if replica else 0,
                                                   "retries": self.retries}))

        await self.nats.call(self.nats.nc.subscribe(cfg.gateway_subject(self.name, "status"),
                                                    cb=on_status))

        async def on_heartbeat(msg: Any) -> None:
            try:
                beat = msgspec.json.decode(msg.data)
            except msgspec.DecodeError:
                return
            if isinstance(beat, dict) and beat.get("role") == "leader":
                self.leader_seq = max(self.leader_seq, int(beat.get("seq") or 0))

        await self.nats.call(self.nats.nc.subscribe(cfg.heartbeat_subject, cb=on_heartbeat))
        log.info("gateway replica at seq %d", self.replica.seq)
        return self

    async def _follow_loop(self) -> None:
        while True:
            try:
                await self.follower.step(0.5, 1024)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failure = exc
                log.error("gateway replica stopped: %s", exc)
                if self.replica is not None:
                    self.replica.fail_waiters(exc)
                return

    async def share_keys(self, keys: KeyStore) -> None:
        """The gateway's API keys live in the shard's key bucket, not in its data directory."""
        self.shared_keys = SharedKeys(self.nats, self.config.keys_bucket, self.config.replicas)
        await self.shared_keys.attach(keys)

    async def share_status(self, service: StatusService, webhooks: WebhookDispatcher) -> None:
        """The gateway's status records live in the shard's status buckets, not in its data
        directory, and only one gateway delivers the webhooks (``sharedstatus``)."""
        self.shared_status = SharedStatus(self.nats, self.config, self.name)
        await self.shared_status.attach(service, webhooks)

    async def stop(self) -> None:
        if self.shared_status is not None:
            with contextlib.suppress(Exception):
                await self.shared_status.close()
        if self.shared_keys is not None:
            await self.shared_keys.close()
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._follow
        with contextlib.suppress(Exception):
            await self.follower.close()
        await asyncio.to_thread(self.nats.close)

    close = stop

    # --- commands ---------------------------------------------------------------------------

    def submit_many(self, cmds: Sequence[C.Command]) -> asyncio.Future[Results]:
        assert self._loop is not None
        return asyncio.ensure_future(self._send(list(cmds)))

    async def submit(self, cmd: C.Command) -> list[E.Event]:
        """Concurrent callers in one loop tick share one request."""
        assert self._loop is not None
        future: asyncio.Future[list[E.Event]] = self._loop.create_future()
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append((cmd, future))
        return await future

    def _flush(self) -> None:
        items, self._pending = self._pending, []
        while items:
            chunk, items = items[:MAX_COMMANDS], items[MAX_COMMANDS:]
            task = asyncio.ensure_future(self._send([cmd for cmd, _ in chunk]))
            task.add_done_callback(lambda done, chunk=chunk: _deliver(done, chunk))  # type: ignore[misc]

    async def _send(self, cmds: list[C.Command]) -> Results:
        if not cmds:
            return []
        if self.failure is not None:
            raise DurabilityError(f"gateway replica failed: {self.failure}", code="NODE_FAILED")
        started = time.monotonic()
        self._oldest.append(started)
        retries = self.retries
        try:
            reply = await self._request(cmds, started)
            answered = time.monotonic()
            assert self.replica is not None
            waits = [self.replica.wait_for(reply.first + i) for i in range(reply.count)]
            results = list(await asyncio.wait_for(asyncio.gather(*waits),
                                                  self.config.request_timeout * 4))
            if time.monotonic() - started > SLOW_COMMAND:  # where an election's time goes
                log.info("command at seq %d: leader answered after %.3f s (%d retries), "
                         "local replica applied it %.3f s later", reply.first,
                         answered - started, self.retries - retries,
                         time.monotonic() - answered)
            return results
        finally:
            self._oldest.remove(started)

    async def _leader_subject(self) -> str | None:
        if self._leader is None:
            current = await self.nats.call(self.lease.current())
            self._leader = current[0].node if current is not None else None
        return None if self._leader is None else self.config.cmd_subject(self._leader)

    async def _ask(self, subject: str, payload: bytes) -> Any:
        """On the NATS loop: the request, abandoned early if the lease moves to another node
        meanwhile (the leader we asked is gone; waiting out the timeout would only delay the
        client's retry). Either way the outcome is unknown, so it is a TIMEOUT."""
        nc = self.nats.nc
        asked = self._leader
        request = asyncio.ensure_future(nc.request(subject, payload,
                                                   timeout=self.config.request_timeout))
        done, _ = await asyncio.wait([request], timeout=0.5)
        while not done:
            try:
                current = await self.lease.current()
            except Exception:
                current = None
            if current is None or current[0].node != asked:
                request.cancel()
                raise NatsTimeout
            done, _ = await asyncio.wait([request], timeout=0.2)
        return request.result()

    async def _request(self, cmds: list[C.Command], started: float) -> Reply:
        cfg = self.config
        payload = encode_request(cmds)
        delay = 0.01
        while True:
            try:
                subject = await self._leader_subject()
                if subject is not None:
                    msg = await self.nats.call(self._ask(subject, payload))
                    reply = msgspec.msgpack.decode(msg.data, type=Reply)
                    if reply.error != "NOT_LEADER":
                        if reply.error:
                            raise DurabilityError(reply.message or reply.error,
                                                  code=reply.error)
                        return reply
                self._leader = None
            except NoRespondersError:
                self._leader = None  # nobody serves there: nothing was written, retry
            except (TimeoutError, NatsTimeout) as exc:
                self._leader = None
                raise DurabilityError("no answer from the leader in time; the command may or "
                                      "may not have been applied", code="TIMEOUT") from exc
            except DurabilityError:
                raise
            except Exception as exc:  # lease bucket unreachable mid-election: retry
                log.debug("leader lookup failed: %r", exc)
                self._leader = None
            if time.monotonic() - started > cfg.election_wait:
                raise DurabilityError("no leader (election in progress)", code="NO_LEADER")
            self.retries += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)


def _deliver(done: asyncio.Future[Results],
             chunk: list[tuple[C.Command, asyncio.Future[list[E.Event]]]]) -> None:
    exc = done.exception() if not done.cancelled() else DurabilityError(
        "gateway is shutting down", code="NODE_CLOSED")
    for i, (_, future) in enumerate(chunk):
        if future.done():
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(done.result()[i])
