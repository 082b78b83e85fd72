"""The leader lease: one key in a JetStream KV bucket whose entries expire after ``ttl``.

Taking it is a create-if-absent; keeping it is a compare-and-set on the revision, every
``renew_every`` seconds. The revision at which a node took it is its **term**, stamped into
every batch it writes. The holder trusts its lease only until ``sent + ttl - margin`` of its
last successful renewal (measured from when the renewal was *sent*, so the server's expiry is
always later than the holder's own deadline): past that it stops publishing at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import msgspec
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError

from bastion.journal.errors import DurabilityError
from bastion.journal.jetstream import hedged, retry_transient

KEY = "leader"


class LeaseLostError(DurabilityError):
    code = "LEASE_LOST"


class Holder(msgspec.Struct, frozen=True):
    node: str
    zone: str
    #: set by a leader handing over in a planned switchover: only ``node`` may take it
    handoff: bool = False


@dataclass
class Lease:
    js: Any
    bucket: str
    ttl: float
    margin: float
    me: Holder
    kv: Any = None
    revision: int = 0
    term: int = 0
    deadline: float = 0.0

    async def open(self) -> Lease:
        async def bind() -> Any:
            try:
                return await self.js.key_value(self.bucket)
            except NotFoundError:
                return await self.js.create_key_value(bucket=self.bucket, ttl=self.ttl,
                                                      history=1, replicas=3)

        self.kv = await retry_transient(bind, f"lease bucket {self.bucket}")
        return self

    def valid(self) -> bool:
        return self.term > 0 and time.monotonic() < self.deadline

    def lost(self) -> BaseException | None:
        return None if self.valid() else LeaseLostError("leader lease expired or lost")

    async def current(self) -> tuple[Holder, int] | None:
        try:
            entry = await hedged(lambda: self.kv.get(KEY))  # answered as soon as elected
        except (KeyNotFoundError, NotFoundError):
            return None
        if not entry.value:
            return None
        return msgspec.json.decode(entry.value, type=Holder), entry.revision

    async def acquire(self, after_handoff: int = 0) -> bool:
        """Take the lease if nobody holds it (or it was handed to us at ``after_handoff``)."""
        sent = time.monotonic()
        value = msgspec.json.encode(self.me)
        try:
            if after_handoff:
                revision = await self.kv.update(KEY, value, last=after_handoff)
            else:
                revision = await self.kv.create(KEY, value)
        except KeyWrongLastSequenceError:
            return False
        self.revision = self.term = revision
        self.deadline = sent + self.ttl - self.margin
        return True

    async def renew(self) -> bool:
        sent = time.monotonic()
        try:
            self.revision = await self.kv.update(KEY, msgspec.json.encode(self.me),
                                                 last=self.revision)
        except KeyWrongLastSequenceError:
            self.term = 0
            return False
        self.deadline = sent + self.ttl - self.margin
        return True

    async def hand_over(self, to: Holder) -> int:
        """Planned switchover: give the lease to ``to`` (we stop writing first)."""
        revision: int = await self.kv.update(KEY, msgspec.json.encode(to), last=self.revision)
        self.revision = revision
        self.term = 0
        self.deadline = 0.0
        return revision

    def drop(self) -> None:
        self.term = 0
        self.deadline = 0.0
