"""``bastion node``: one engine node of a shard, standby or leader.

Standby: tail the stream into a warm replica, compare state hashes at checkpoints, and take the
lease when it expires (never while diverged). Leader: read to the end of the stream, wrap the
replica's engine in the ordinary ``Node`` with the JetStream journal (so the write path is the
embedded one), put markets into ``recovery`` after a failover, serve the command subject, renew
the lease on the NATS thread, run the venue's one withdrawal worker and deposit watcher (every
custody call fenced on the lease), and step down (back to standby, keeping its state) the
moment the lease or the fence says another node leads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import msgspec
from nats.js.errors import KeyWrongLastSequenceError

from bastion.cluster.config import ClusterConfig
from bastion.cluster.follower import Checkpoint, Follower, bootstrap
from bastion.cluster.lease import Holder, Lease, LeaseLostError
from bastion.cluster.replica import Replica
from bastion.cluster.snapbucket import SnapshotBucket
from bastion.cluster.wire import Reply, Request, decode_commands
from bastion.core import commands as C
from bastion.journal.errors import DurabilityError
from bastion.journal.jetstream import JetStreamJournal, ensure_stream
from bastion.journal.natsloop import NatsLoop
from bastion.node.config import NodeConfig
from bastion.node.node import Node, wall_clock_ms
from bastion.withdrawals.runtime import Pipeline, PipelineConfig

log = logging.getLogger("bastion.cluster")


class NodeStatus(msgspec.Struct):
    name: str
    zone: str
    role: str
    seq: int
    stream_seq: int
    term: int
    diverged: str | None
    checked: int
    pid: int
    at: float = 0.0


class Member:
    def __init__(self, config: ClusterConfig, name: str, zone: str, data_dir: Path, *,
                 demo: bool = True) -> None:
        self.config = config
        self.name = name
        self.zone = zone
        self.data_dir = data_dir
        self.demo = demo
        self.role = "starting"
        self.node: Node | None = None
        #: withdrawal worker + deposit watcher, while we lead (started in the background)
        self.withdrawals: Pipeline | None = None
        self._starting: asyncio.Task[None] | None = None
        self.replica: Replica | None = None
        self.follower: Follower | None = None
        self.journal: JetStreamJournal | None = None
        self.accepting = False
        self._stepdown = asyncio.Event()
        self._handoff: tuple[int, asyncio.Future[float]] | None = None
        self._subs: list[Any] = []
        self._cmd_sub: Any = None
        self._renewing = False
        self._generation = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.last_switchover_ms: float | None = None
        #: the last heartbeat heard from every other node: (monotonic time, role)
        self._peers: dict[str, tuple[float, str]] = {}
        #: the term we led until our renewals failed (the lease bucket electing a leader, or
        #: NATS briefly unreachable): we take the lease back first, and it is no failover
        self._resume_term = 0
        self._resume_until = 0.0
        self._defer_since = 0.0
        self._refused_at = -10.0

    # --- start-up ---------------------------------------------------------------------------

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        cfg = self.config
        self.nats = await asyncio.to_thread(NatsLoop, list(cfg.servers), name=f"node-{self.name}",
                                      connect_wait=cfg.connect_wait)
        nc = self.nats.nc
        # answer status from the start: "starting" while loading the snapshot and replaying
        self._subs.append(await self.nats.call(
            nc.subscribe(cfg.node_subject(self.name, "status"), cb=self._on_status)))
        self._subs.append(await self.nats.call(
            nc.subscribe(cfg.heartbeat_subject, cb=self._on_heartbeat)))
        await self.nats.call(ensure_stream(self.nats.js, cfg.stream, cfg.log_subject,
                                           cfg.replicas))
        self.lease = await self.nats.call(
            Lease(self.nats.js, cfg.lease_bucket, cfg.lease_ttl, cfg.lease_margin,
                  Holder(self.name, self.zone)).open())
        self.snaps = SnapshotBucket(self.nats.js, cfg.snapshot_bucket, cfg.replicas)
        self.journal = await asyncio.to_thread(JetStreamJournal, self.nats, cfg.stream,
                                               cfg.log_subject)
        self.replica = await bootstrap(self.nats, cfg, self.journal, self.snaps)
        self.follower = Follower(self.nats, cfg, self.journal, self.replica)
        await self.follower.watch_checkpoints()
        self._subs.append(await self.nats.call(
            nc.subscribe(cfg.node_subject(self.name, "promote"), cb=self._on_promote)))
        self._subs.append(await self.nats.call(
            nc.subscribe(cfg.node_subject(self.name, "hash"), cb=self._on_hash)))
        self._subs.append(await self.nats.call(
            nc.subscribe(cfg.node_subject(self.name, "switchover"), cb=self._on_switchover)))

    def status(self) -> NodeStatus:
        replica = self.replica
        seq = self.node.engine.seq if self.node is not None else (replica.seq if replica else 0)
        lease: Lease | None = getattr(self, "lease", None)
        return NodeStatus(self.name, self.zone, self.role, seq,
                          replica.stream_seq if replica else 0, lease.term if lease else 0,
                          replica.diverged if replica else None,
                          replica.checked if replica else 0, _pid(), time.time())

    # --- the main loop ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        await self.open()
        beat = asyncio.create_task(self._heartbeat(stop))
        try:
            while not stop.is_set():
                await self._standby(stop)
                if stop.is_set():
                    break
                await self._lead(stop)
        finally:
            beat.cancel()
            await self.close()

    async def _standby(self, stop: asyncio.Event) -> None:
        """Tail until we take the lease (expired, or handed to us)."""
        assert self.follower is not None and self.replica is not None
        self.role = "resuming" if self._resuming() else "standby"
        if self.role == "standby":
            await self.follower.start()
        # resuming: our replica is the stream's end, so take the lease back first; a new
        # consumer could only be made once the stream's own election is over
        log.info("%s %s at seq %d", self.name, self.role, self.replica.seq)
        next_poll = 0.0
        while not stop.is_set():
            if self.follower.tail is not None:
                await self.follower.step(0.05)
            else:
                await asyncio.sleep(0.02)
            if self._handoff is not None:
                if await self._take(self._handoff[0]):
                    return
                continue
            if time.monotonic() < next_poll:
                continue
            next_poll = time.monotonic() + self.config.poll_every
            if self.replica.diverged:
                await self._refuse_promotion()
                continue
            try:
                holder = await self.nats.call(self.lease.current())
                if await self._claim(holder):
                    return
            except Exception as exc:
                log.debug("lease check failed: %r", exc)
            if self.role == "resuming" and not self._resuming():
                self.role = "standby"
                await self.follower.start()

    async def _refuse_promotion(self) -> None:
        """A diverged standby never takes the lease; when nobody holds it, say why (every
        10 s), since order entry is stopped until an operator acts."""
        now = time.monotonic()
        if now < self._refused_at + 10:
            return
        try:
            holder = await self.nats.call(self.lease.current())
        except Exception:
            return
        if holder is None:
            self._refused_at = now
            log.error("%s: the lease is free but this node is barred from promotion "
                      "(diverged: %s); no leader until a healthy node runs", self.name,
                      self.replica.diverged if self.replica else "?")

    async def _claim(self, holder: tuple[Holder, int] | None) -> bool:
        """Take a free lease, unless a live peer that just led may take it back; after our
        own renewals failed, take ours back first (by a compare-and-set on our last revision
        if the entry is still there, else by creating it)."""
        resuming = self._resuming()
        if holder is None:
            if not resuming and self._yield_to_peer():
                return False
            return await self._take(0)
        self._defer_since = 0.0
        if resuming and holder[0].node == self.name and holder[1] == self.lease.revision:
            return await self._take(holder[1])
        if holder[0].node != self.name:
            self._resume_term = 0
        return False

    def _resuming(self) -> bool:
        if self._resume_term and time.monotonic() > self._resume_until:
            self._resume_term = 0
        return bool(self._resume_term)

    def _yield_to_peer(self) -> bool:
        """A peer heard within 70% of a TTL as leader (or taking its lease back) is alive:
        its lease lapsed because NATS could not renew it, not because it died. Give it up
        to ``election_wait`` to take it back before failing over. A dead leader's last
        heartbeat is older than that by the time its lease expires, so a real failover
        waits for nothing."""
        now = time.monotonic()
        window = self.config.lease_ttl * 0.7
        if not any(role in ("leader", "resuming") and now - at < window
                   for at, role in list(self._peers.values())):
            self._defer_since = 0.0
            return False
        self._defer_since = self._defer_since or now
        return now - self._defer_since < self.config.election_wait

    async def _take(self, handoff: int) -> bool:
        try:
            got = await self.nats.call(self.lease.acquire(after_handoff=handoff))
        except Exception as exc:
            log.info("could not take the lease: %r", exc)
            got = False
        if not got and self._handoff is not None:
            self._handoff[1].set_exception(DurabilityError("handoff failed", code="HANDOFF"))
            self._handoff = None
        return got

    async def _lead(self, stop: asyncio.Event) -> None:
        assert self.follower is not None and self.replica is not None
        failover = self._handoff is None
        resumed_from = self._resume_term if failover else 0
        t0 = time.monotonic()
        self.role = "promoting"
        self._stepdown.clear()
        self._renewing = True
        self._generation += 1
        generation = self._generation
        self.nats.spawn(lambda: self._renew(generation))
        try:
            resumed = await self._become_leader(failover, resumed_from)
        except Exception as exc:
            log.warning("%s could not become leader: %s", self.name, exc)
            await self._step_down("promotion failed")
            return
        took = time.monotonic() - t0
        self._resume_term = 0
        term = self.lease.term
        how = "resumed" if resumed else "failover" if failover else "switchover"
        log.info("%s leads at term %d from seq %d (%s, ready in %.0f ms)", self.name,
                 self.lease.term, self.replica.seq, how, took * 1000)
        if self._handoff is not None:
            self._handoff[1].set_result(took)
            self._handoff = None
        # off the promotion's path: orders (and a switchover's reply) come first
        self._starting = asyncio.create_task(self._start_withdrawals())
        waiter = asyncio.create_task(self._stepdown.wait())
        stopper = asyncio.create_task(stop.wait())
        snapper = asyncio.create_task(self._snapshots())
        await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in (waiter, stopper, snapper):
            task.cancel()
        if stop.is_set() and self.lease.valid():
            with contextlib.suppress(Exception):
                await self._final_snapshot()
        elif (not stop.is_set() and not self.lease.valid() and not self._resume_term
              and self.node is not None):  # None: handed over (``switchover``), no lapse
            # the writer's lease guard saw the lapse before the renewal loop did (which then
            # finds itself cancelled and arms nothing): arm the resumption here too
            log.info("%s: lease lapsed at term %d, will try to take it back", self.name, term)
            self._arm_resume(term)
        await self._step_down("stopping" if stop.is_set() else "lease or fence lost")

    async def _become_leader(self, failover: bool, resumed_from: int = 0) -> bool:
        """Returns whether this was a resumption: we led at ``resumed_from`` until NATS failed
        our renewals, and the stream still ends with our own message (nobody else wrote), so
        nothing a failover protects against happened and markets stay as they are."""
        assert self.follower is not None and self.replica is not None and self.journal
        cfg = self.config
        await self.follower.stop()
        tail = await self.nats.call(self.journal.fetch_tail())
        gap = tail.stream_seq - self.replica.stream_seq
        if self.replica.stream_seq and 0 < gap <= 256:
            # a few messages (an append stored while we stepped down): leader reads, no
            # consumer to make while the stream may have just elected
            await self.follower.read_from_leader(tail.stream_seq)
        if (tail.stream_seq, tail.last_seq) != (self.replica.stream_seq, self.replica.seq):
            await self.follower.start()
            if not await self.follower.catch_up(tail.stream_seq, cfg.lease_ttl * 4):
                raise DurabilityError("could not read to the end of the stream",
                                      code="CATCH_UP")
            await self.follower.stop()
        if not self.lease.valid():
            raise LeaseLostError("lease expired while catching up")
        engine = self.replica.engine
        journal = await asyncio.to_thread(JetStreamJournal, self.nats, cfg.stream,
                                          cfg.log_subject)
        journal.become_writer(self.lease.term, journal.tail, guard=self._guard,
                              checkpoint_every=cfg.checkpoint_every)
        if journal.tail.last_seq != engine.seq:
            raise DurabilityError("stream moved while promoting", code="CATCH_UP")
        node = Node(self.data_dir / "leader", journal=journal, engine=engine,
                    config=NodeConfig(snapshot_every_commands=0, snapshot_every_seconds=0,
                                      group_max_delay=0.0, progress=False,
                                      gc_freeze_after_recovery=False,
                                      archive_covered_segments=False))
        await node.start()
        self.node = node
        node.subscribe(self._on_applied)
        fresh = engine.seq == 0
        if fresh and self.demo:
            await node.submit_many(_demo_setup())
        resumed = bool(resumed_from) and tail.term == resumed_from
        if failover and not fresh and not resumed:
            await node.submit_many(self._recovery_commands(engine))
        else:
            await node.submit_many([])
        self.role = "leader"
        self.accepting = True
        self._cmd_sub = await self.nats.call(
            self.nats.nc.subscribe(cfg.cmd_subject(self.name), cb=self._on_command))
        return resumed

    async def _start_withdrawals(self) -> None:
        """The venue's one withdrawal worker runs beside the leader: ``cluster up`` passes the
        shared custody service in ``BASTION_CUSTODY_URL``; without one nothing is sent."""
        cfg = PipelineConfig.from_env()
        if not cfg.enabled or self.node is None:
            return
        if cfg.custody_url is None:
            log.warning("%s: no BASTION_CUSTODY_URL, withdrawals stay queued (no worker)",
                        self.name)
            return
        pipeline = Pipeline(self.node, self.data_dir, cfg, demo=self.demo, worker=True,
                            guard=self._guard)
        try:
            await pipeline.start()
        except asyncio.CancelledError:  # stepped down meanwhile
            await pipeline.stop()
            raise
        except Exception as exc:  # custody trouble must not stop order entry
            log.error("%s: withdrawal worker not started: %r", self.name, exc)
            await pipeline.stop()
            return
        self.withdrawals = pipeline
        log.info("%s: withdrawal worker and deposit watcher started (custody %s)", self.name,
                 pipeline.custody_url)

    async def _stop_withdrawals(self) -> None:
        starting, self._starting = self._starting, None
        if starting is not None and not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
        pipeline, self.withdrawals = self.withdrawals, None
        if pipeline is not None:
            with contextlib.suppress(Exception):
                await pipeline.stop()
            log.info("%s: withdrawal worker stopped", self.name)

    def _recovery_commands(self, engine: Any) -> list[C.Command]:
        until = wall_clock_ms() + self.config.recovery_window_ms
        reason = f"failover to {self.name} (zone {self.zone}): recovery protection"
        return [C.SetMarketMode(market=name, mode="recovery", reason=reason, until_ts=until)
                for name, mkt in sorted(engine.markets.items()) if mkt.mode == "open"]

    def _guard(self) -> BaseException | None:
        if self._stepdown.is_set():
            return LeaseLostError("stepping down")
        return self.lease.lost()

    async def _renew(self, generation: int) -> None:
        """On the NATS thread: keep the lease; tell the main loop the moment it is gone."""
        lease = self.lease

        def current() -> bool:
            return self._renewing and self._generation == generation

        term = lease.term
        while current() and lease.term:
            try:
                ok = await asyncio.wait_for(lease.renew(), self.config.renew_every * 2)
                if not ok:
                    break
            except Exception as exc:
                log.debug("lease renewal failed: %r", exc)
            if not lease.valid():
                break
            await asyncio.sleep(self.config.renew_every)
        if current() and self._loop is not None:
            self._arm_resume(term)
            self._loop.call_soon_threadsafe(self._stepdown.set)

    def _arm_resume(self, term: int) -> None:
        """Our lease lapsed or was refused (it expired while the bucket elected a leader, or
        was taken): try to take it back; ``_claim`` gives up as soon as another node holds
        it, and ``_become_leader`` resumes only if the stream still ends with our term."""
        self._resume_term = term
        self._resume_until = time.monotonic() + self.config.election_wait

    async def _step_down(self, why: str) -> None:
        self.accepting = False
        self._renewing = False
        await self._stop_withdrawals()
        if self._cmd_sub is not None:
            sub, self._cmd_sub = self._cmd_sub, None
            with contextlib.suppress(Exception):
                await self.nats.call(sub.unsubscribe())
        node, self.node = self.node, None
        if node is not None:
            committer = getattr(node.journal, "active", None)
            if committer is not None and not self.lease.valid():
                committer.fail(LeaseLostError(why))
            with contextlib.suppress(Exception):
                await node.close()
            self.replica = self._replica_of(node)
            self.follower = Follower(self.nats, self.config, self.journal or node.journal,  # type: ignore[arg-type]
                                     self.replica)
            await self.follower.watch_checkpoints()
        self.lease.drop()
        if self._resume_term:
            # stepping down talks to NATS and is slow exactly while it elects: the window to
            # take our lease back starts once we are ready to
            self._resume_until = max(self._resume_until,
                                     time.monotonic() + self.config.election_wait)
        if self.role != "standby":
            log.warning("%s steps down: %s", self.name, why)
        self.role = "resuming" if self._resuming() else "standby"

    @staticmethod
    def _replica_of(node: Node) -> Replica:
        """Our engine as a standby's replica; where it ends in the stream is known when every
        command it applied is stored (so a resumption needs no catch-up read)."""
        replica = Replica(node.engine)
        tail = getattr(node.journal, "tail", None)
        if tail is not None and tail.last_seq == node.engine.seq:
            replica.stream_seq = tail.stream_seq
        return replica

    # --- serving (callbacks on the NATS thread) ---------------------------------------------

    async def _on_command(self, msg: Any) -> None:
        loop = self._loop
        assert loop is not None
        try:
            request = msgspec.msgpack.decode(msg.data, type=Request)
            cmds = decode_commands(request.commands)
        except Exception as exc:
            await msg.respond(msgspec.msgpack.encode(Reply(error="BAD_REQUEST",
                                                           message=str(exc)[:200])))
            return
        done = asyncio.run_coroutine_threadsafe(self._submit(cmds), loop)
        reply = await asyncio.wrap_future(done)
        with contextlib.suppress(Exception):
            await msg.respond(msgspec.msgpack.encode(reply))

    async def _submit(self, cmds: list[C.Command]) -> Reply:
        node = self.node
        if node is None or not self.accepting:
            return Reply(error="NOT_LEADER", message="this node is not the leader")
        try:
            await node.submit_many(cmds)
        except DurabilityError as exc:
            if node.failure is not None:  # fence, lease or journal failure: stop leading
                self._stepdown.set()
            if exc.code == "FENCED" or (exc.code == "NODE_FAILED" and
                                        getattr(node.failure, "code", "") == "FENCED"):
                return Reply(error="NOT_LEADER", message=str(exc))
            return Reply(error=exc.code, message=str(exc))
        return Reply(first=cmds[0].seq if cmds else node.engine.seq, count=len(cmds))

    def _on_applied(self, events: list[Any]) -> None:
        """Leader: publish the state hash where a checkpoint message ended."""
        node = self.node
        if node is None:
            return
        committer = getattr(node.journal, "active", None)
        if committer is None or not committer.checkpoint_ends:
            return
        seq = node.engine.seq
        ends = committer.checkpoint_ends
        while ends and ends[0] < seq:
            ends.popleft()
        if ends and ends[0] == seq:
            ends.popleft()
            cp = Checkpoint(seq, node.engine.state_hash(), self.lease.term)
            self.nats.call_soon(lambda: self.nats.loop.create_task(self.nats.nc.publish(
                self.config.checkpoint_subject, msgspec.msgpack.encode(cp))))

    async def _on_status(self, msg: Any) -> None:
        await msg.respond(msgspec.json.encode(self.status()))

    async def _on_heartbeat(self, msg: Any) -> None:
        try:
            peer = msgspec.json.decode(msg.data, type=NodeStatus)
        except msgspec.DecodeError:
            return
        if peer.name != self.name:
            self._peers[peer.name] = (time.monotonic(), peer.role)

    async def _on_hash(self, msg: Any) -> None:
        """``{seq, hash}`` of this node's state right now (tests and operators compare)."""
        loop = self._loop
        assert loop is not None

        async def take() -> dict[str, Any]:
            engine = self.node.engine if self.node is not None else (
                self.replica.engine if self.replica else None)
            if engine is None:
                return {"seq": 0, "hash": ""}
            return {"seq": engine.seq, "hash": engine.state_hash(), "role": self.role}

        answer = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(take(), loop))
        await msg.respond(msgspec.json.encode(answer))

    async def _on_promote(self, msg: Any) -> None:
        """Planned switchover, target side: the leader handed us the lease at ``revision``."""
        loop = self._loop
        assert loop is not None
        revision = int(msg.data or b"0")

        async def arm() -> float:
            future: asyncio.Future[float] = loop.create_future()
            self._handoff = (revision, future)
            return await asyncio.wait_for(future, 10)

        try:
            took = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(arm(), loop))
            await msg.respond(msgspec.json.encode({"ok": True, "ms": took * 1000}))
        except Exception as exc:
            await msg.respond(msgspec.json.encode({"ok": False, "error": repr(exc)}))

    async def _on_switchover(self, msg: Any) -> None:
        loop = self._loop
        assert loop is not None
        target = (msg.data or b"").decode()
        done = asyncio.run_coroutine_threadsafe(self.switchover(target), loop)
        try:
            result = await asyncio.wrap_future(done)
        except Exception as exc:
            result = {"ok": False, "error": str(exc)}
        await msg.respond(msgspec.json.encode(result))

    async def switchover(self, target: str) -> dict[str, Any]:
        """Leader side: stop taking commands, drain, hand the lease to ``target``, and wait
        until it serves. The pause is what order entry sees."""
        node = self.node
        if node is None or self.role != "leader":
            raise DurabilityError(f"{self.name} is not the leader", code="NOT_LEADER")
        await self._stop_withdrawals()  # before the pause: order entry does not wait for it
        t0 = time.monotonic()
        self.accepting = False
        self._renewing = False
        if self._cmd_sub is not None:
            sub, self._cmd_sub = self._cmd_sub, None
            await self.nats.call(sub.unsubscribe())
        await node.close()
        drained = time.monotonic()
        revision = 0
        for _ in range(20):  # a renewal still in flight may move the revision once
            try:
                revision = await self.nats.call(
                    self.lease.hand_over(Holder(target, "", handoff=True)))
                break
            except KeyWrongLastSequenceError:
                await asyncio.sleep(0.05)
        if not revision:
            raise DurabilityError("could not hand the lease over", code="HANDOFF")
        try:
            reply = await self.nats.call(self.nats.nc.request(
                self.config.node_subject(target, "promote"), str(revision).encode(), timeout=10))
            answer = msgspec.json.decode(reply.data)
        except Exception as exc:
            answer = {"ok": False, "error": repr(exc)}
        pause = (time.monotonic() - t0) * 1000
        self.last_switchover_ms = pause
        self.node = None
        self.replica = self._replica_of(node)
        self.follower = Follower(self.nats, self.config, self.journal, self.replica)  # type: ignore[arg-type]
        await self.follower.watch_checkpoints()
        self._stepdown.set()
        # before the reply: whoever asks next (an upgrade's next step) sees one leader
        self.role = "standby"
        log.info("switchover %s -> %s: pause %.1f ms (drain %.1f ms)", self.name, target, pause,
                 (drained - t0) * 1000)
        return {"ok": bool(answer.get("ok")), "from": self.name, "to": target,
                "pause_ms": round(pause, 1), "drain_ms": round((drained - t0) * 1000, 1),
                "detail": answer}

    # --- snapshots and heartbeats -----------------------------------------------------------

    async def _snapshots(self) -> None:
        every = self.config.snapshot_every
        if every <= 0:
            return
        while True:
            await asyncio.sleep(every)
            try:
                await self._final_snapshot()
            except Exception as exc:
                log.warning("snapshot upload failed (the stream still has everything): %s", exc)

    async def _final_snapshot(self) -> None:
        node = self.node
        if node is None:
            return
        info = await node.snapshot()
        seq = await self.nats.call(self.snaps.upload(info.path))
        log.info("snapshot at seq %d uploaded to %s", seq, self.config.snapshot_bucket)

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        subject = self.config.heartbeat_subject
        while not stop.is_set():
            data = msgspec.json.encode(self.status())
            with contextlib.suppress(Exception):
                await self.nats.call(self.nats.nc.publish(subject, data))
            # often enough that a live leader is always heard within 70% of a TTL
            await asyncio.sleep(min(0.5, self.config.lease_ttl / 5))

    async def close(self) -> None:
        if self.node is not None:
            await self._step_down("stopping")
        if self.follower is not None:
            await self.follower.close()
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await self.nats.call(sub.unsubscribe())
        await asyncio.to_thread(self.nats.close)


def _demo_setup() -> list[C.Command]:
    from bastion import demo

    cmds = demo.demo_setup()
    perp_setup = getattr(demo, "demo_perp_setup", None)
    if perp_setup is not None:
        cmds += perp_setup()
    return cmds


def _pid() -> int:
    import os

    return os.getpid()
