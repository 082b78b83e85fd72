"""A read replica: the stream applied to a local ``Engine``, message by message.

Standby nodes and gateways both run one. It publishes each message's events to subscribers
(the gateway's read model and WebSocket feeds), wakes whoever waits for a sequence number
(read-your-writes), and hashes its state at every checkpoint message so the leader's hash can
be compared with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable

from bastion.core import events as E
from bastion.core.codec import decode_command
from bastion.core.engine import Engine
from bastion.journal.errors import DurabilityError
from bastion.journal.framing import Block

log = logging.getLogger("bastion.cluster")

Subscriber = Callable[[list[E.Event]], None]


class DivergedError(DurabilityError):
    code = "REPLICA_DIVERGED"


class Replica:
    def __init__(self, engine: Engine | None = None, keep_events: int = 0) -> None:
        self.engine = engine or Engine()
        #: events of the last ``keep_events`` commands (a gateway's reply may arrive after
        #: its replica already applied the command)
        self.keep_events = keep_events
        self._recent: dict[int, list[E.Event]] = {}
        #: last stream message fully applied (0: none yet, or unknown after a snapshot)
        self.stream_seq = 0
        self._subscribers: list[Subscriber] = []
        self._waiters: dict[int, asyncio.Future[list[E.Event]]] = {}
        #: our own hashes at recent checkpoints, and the leader's we could not check yet
        self.hashes: OrderedDict[int, str] = OrderedDict()
        self.leader_hashes: OrderedDict[int, str] = OrderedDict()
        self.checked = 0
        self.diverged: str | None = None

    @property
    def seq(self) -> int:
        return self.engine.seq

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def wait_for(self, seq: int) -> asyncio.Future[list[E.Event]]:
        """Resolves to command ``seq``'s events once this replica has applied it."""
        future = self._waiters.get(seq)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            if seq <= self.engine.seq:
                future.set_result(self._recent.get(seq, []))
                return future
            self._waiters[seq] = future
        return future

    def waiting(self) -> bool:
        """Someone waits for a seq this replica has not applied yet."""
        return bool(self._waiters)

    def fail_waiters(self, exc: BaseException) -> None:
        waiters, self._waiters = self._waiters, {}
        for future in waiters.values():
            if not future.done():
                future.set_exception(exc)

    def apply_block(self, stream_seq: int, block: Block, checkpoint: bool) -> int:
        """Apply the records of one message not yet applied; returns how many."""
        engine = self.engine
        apply = engine.apply
        waiters = self._waiters
        flat: list[E.Event] = []
        applied = 0
        seq = block.first_seq
        for payload in block.payloads:
            if seq > engine.seq:
                if seq != engine.seq + 1:
                    raise DivergedError(f"gap in the stream: message {stream_seq} starts at "
                                        f"{block.first_seq}, replica is at {engine.seq}")
                events = apply(decode_command(payload))
                applied += 1
                flat.extend(events)
                if self.keep_events:
                    recent = self._recent
                    recent[seq] = events
                    if len(recent) > self.keep_events:
                        del recent[next(iter(recent))]
                if waiters:
                    future = waiters.pop(seq, None)
                    if future is not None and not future.done():
                        future.set_result(events)
            seq += 1
        self.stream_seq = stream_seq
        if applied and self._subscribers:
            for callback in list(self._subscribers):
                try:
                    callback(flat)
                except Exception:
                    log.exception("replica subscriber failed")
        if checkpoint and engine.seq == block.last_seq:
            self._remember(self.hashes, engine.seq, engine.state_hash())
            self._compare(engine.seq)
        return applied

    def leader_checkpoint(self, seq: int, state_hash: str) -> None:
        self._remember(self.leader_hashes, seq, state_hash)
        self._compare(seq)

    def _compare(self, seq: int) -> None:
        mine = self.hashes.get(seq)
        theirs = self.leader_hashes.get(seq)
        if mine is None or theirs is None:
            return
        self.checked += 1
        if mine != theirs and self.diverged is None:
            self.diverged = (f"state hash mismatch at seq {seq}: leader {theirs[:16]}, "
                             f"this replica {mine[:16]}")
            log.error("ALARM replica diverged from the leader: %s; barred from promotion",
                      self.diverged)

    @staticmethod
    def _remember(store: OrderedDict[int, str], seq: int, value: str) -> None:
        store[seq] = value
        while len(store) > 256:
            store.popitem(last=False)
