"""Keeping a ``Replica`` current from the stream: bootstrap from the latest snapshot in the
object store (or from nothing), then tail; used by standby nodes and by gateways."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import msgspec

from bastion.cluster.config import ClusterConfig
from bastion.cluster.replica import Replica
from bastion.cluster.snapbucket import SnapshotBucket, check_timeline
from bastion.cluster.tail import StreamTail
from bastion.core.engine import Engine
from bastion.journal.jetstream import JetStreamJournal
from bastion.journal.natsloop import NatsLoop

log = logging.getLogger("bastion.cluster")

#: seconds without a delivered message before the follower checks whether it is stuck
STALL_AFTER = 2.0
#: the same while someone waits for a seq the leader already acknowledged (a gateway's
#: client): the message is in the stream, so a consumer that does not deliver it is stuck
STALL_WAITING = 0.5


class Checkpoint(msgspec.Struct, frozen=True):
    seq: int
    state_hash: str
    term: int


async def bootstrap(nats: NatsLoop, config: ClusterConfig, journal: JetStreamJournal,
                    snaps: SnapshotBucket, keep_events: int = 0) -> Replica:
    """A replica at the latest snapshot (checked against the stream's timeline), or empty."""
    t0 = time.perf_counter()
    loaded = await nats.call(snaps.load())
    if loaded is None:
        log.info("no snapshot in %s: replaying the stream from the start", snaps.bucket)
        return Replica(Engine(), keep_events)
    engine, seq, term = loaded
    if seq > 0:
        check_timeline(await asyncio.to_thread(journal.term_at, seq), term, seq)
    log.info("loaded snapshot at seq %d in %.3f s", seq, time.perf_counter() - t0)
    return Replica(engine, keep_events)


class Follower:
    def __init__(self, nats: NatsLoop, config: ClusterConfig, journal: JetStreamJournal,
                 replica: Replica) -> None:
        self.nats = nats
        self.config = config
        self.journal = journal
        self.replica = replica
        self.tail: StreamTail | None = None
        self._progress = time.monotonic()
        self._checkpoints: Any = None

    async def position(self) -> int:
        """Stream seq of the first message this replica still needs. After a snapshot the
        replica knows its command seq only: find the message holding it and record the last
        message fully applied (else the stall check, comparing message numbers, would see a
        replica forever behind a stream that is not moving)."""
        if self.replica.stream_seq:
            return self.replica.stream_seq + 1
        seq = self.replica.engine.seq
        if seq == 0:
            return 1
        stream_seq, block = await self.nats.call(self.journal.locate(seq))
        done = stream_seq if block.last_seq == seq else stream_seq - 1
        self.replica.stream_seq = done
        return done + 1

    async def start(self) -> None:
        await self.stop()
        self.tail = StreamTail(self.nats, self.config.stream, self.config.log_subject)
        await self.tail.start(await self.position())

    async def watch_checkpoints(self) -> None:
        loop = asyncio.get_running_loop()

        async def on_checkpoint(msg: Any) -> None:
            try:
                cp = msgspec.msgpack.decode(msg.data, type=Checkpoint)
            except msgspec.DecodeError:
                return
            loop.call_soon_threadsafe(self.replica.leader_checkpoint, cp.seq, cp.state_hash)

        self._checkpoints = await self.nats.call(
            self.nats.nc.subscribe(self.config.checkpoint_subject, cb=on_checkpoint))

    async def step(self, timeout: float, max_items: int = 256) -> int:
        """Apply whatever arrives within ``timeout``; returns commands applied."""
        assert self.tail is not None
        items = await self.tail.take(max_items, timeout)
        applied = 0
        for stream_seq, block, checkpoint in items:
            if stream_seq <= self.replica.stream_seq:
                continue
            applied += self.replica.apply_block(stream_seq, block, checkpoint)
        now = time.monotonic()
        if items:
            self._progress = now
        elif now - self._progress > (STALL_WAITING if self.replica.waiting() else STALL_AFTER):
            await self._unstall(now)
        return applied

    async def _unstall(self, now: float) -> None:
        """Nothing delivered for a while: if the stream has moved on, the consumer is gone
        (its server died or ran out of storage), so start a new one where we are."""
        self._progress = now
        try:
            tail = await self.nats.call(self.journal.fetch_tail())
            checked = time.monotonic()
        except Exception as exc:
            log.debug("tail check failed: %r", exc)
            return
        if tail.stream_seq > self.replica.stream_seq:
            log.warning("stream consumer stalled at message %d (stream at %d): reading from "
                        "the stream leader, then resubscribing", self.replica.stream_seq,
                        tail.stream_seq)
            await self.read_from_leader(tail.stream_seq)
            read = time.monotonic()
            await self.start()
            log.info("stall resolved: tail check %.3f s, leader reads %.3f s, new consumer "
                     "%.3f s", checked - now, read - checked, time.monotonic() - read)

    async def read_from_leader(self, end: int) -> None:
        """Leader reads (never a lagging replica's copy: an R1 consumer placed on a server
        that is behind, e.g. out of storage, would stall forever)."""
        first = await self.position()
        while first <= end:
            last = min(end, first + 255)
            chunk = await self.nats.call(self.journal.fetch_range(first, last))
            for stream_seq, block in chunk:
                self.replica.apply_block(stream_seq, block, False)
            first = last + 1

    async def catch_up(self, target_stream_seq: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.replica.stream_seq < target_stream_seq:
            if time.monotonic() > deadline:
                return False
            await self.step(0.2, 4096)
        return True

    async def stop(self) -> None:
        if self.tail is not None:
            tail, self.tail = self.tail, None
            await tail.stop()

    async def close(self) -> None:
        await self.stop()
        if self._checkpoints is not None:
            sub, self._checkpoints = self._checkpoints, None
            with contextlib.suppress(Exception):
                await self.nats.call(sub.unsubscribe())
