"""API keys shared by every gateway of a shard: a replicated JetStream KV bucket
(``bastion_<shard>_keys``, R3 like the lease bucket), one entry per key holding its stored record
(the secret stays encrypted under the server key every gateway shares).

A change is written to the bucket first, compare-and-set on the key's last revision (a
permission change racing a revoke on another gateway cannot bring the key back), and applied to
this gateway's ``KeyStore`` only once the bucket stored it; every gateway watches the bucket
from the start (current values, then updates) and applies what the others wrote, so a revoke
closes WebSockets logged in with the key on every gateway. Revisions order it all: an update is
applied only if it is newer than what this gateway already holds for that key.

A write the bucket does not confirm in time fails with a clear 503 and changes nothing here. A
create whose ack was lost may still be stored once NATS has its quorum back: it is settled in the
background (a delete marker that lands only on a never-written key, else a delete of exactly
that record), so a failed create never leaves a key behind.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

import msgspec

from bastion.api.security.keys import Change, KeyStore, KeysUnavailableError, Record
from bastion.cluster.kvrecords import Conflict, KvRecords, first_value
from bastion.journal.errors import DurabilityError
from bastion.journal.natsloop import NatsLoop

log = logging.getLogger("bastion.cluster.keys")

#: holds ``KeyStore.server_key_check()``: a gateway with another server key refuses to start
CHECK_KEY = "server.check"


class SharedKeys:
    def __init__(self, nats: NatsLoop, bucket: str, replicas: int,
                 write_wait: float = 5.0, resync_every: float = 30.0) -> None:
        self.nats = nats
        #: how long a change may wait for the bucket (an election) before it fails with 503
        self.write_wait = write_wait
        self.records = KvRecords(nats, bucket, replicas, "API key bucket",
                                 resync_every=resync_every)
        self.keys: KeyStore | None = None

    @property
    def bucket(self) -> str:
        return self.records.bucket

    async def attach(self, keys: KeyStore) -> None:
        """Make ``keys`` a replica of the bucket: check the server key, load what the bucket
        holds, then follow it (call from the API's loop, before serving)."""
        await self.nats.call(self.records.open())
        await self.nats.call(self._check(keys.server_key_check()))
        self.keys = keys
        keys.share(self.write)
        await self.records.follow(self._apply)
        log.info("API keys: %d from bucket %s",
                 sum(1 for k in self.records.revs if keys.get(k)), self.bucket)

    async def close(self) -> None:
        await self.records.close()

    async def _check(self, value: str) -> None:
        stored = await first_value(self.records.kv, CHECK_KEY, value.encode(),
                                   f"API key bucket {self.bucket}")
        if stored != value.encode():
            err = DurabilityError(
                f"this gateway's server key differs from the one the other gateways use "
                f"(bucket {self.bucket}): every gateway must get the same BASTION_SERVER_KEY "
                f"(`bastion cluster up` keeps it in DIR/server.key)",
                code="SERVER_KEY_MISMATCH")
            log.error("%s", err)
            raise err

    def _apply(self, key: str, revision: int, value: bytes | None) -> None:
        if key == CHECK_KEY:
            return
        assert self.keys is not None
        try:
            self.keys.apply(key, None if value is None else msgspec.json.decode(value))
        except (ValueError, KeyError, TypeError) as exc:
            log.error("API key %s from bucket %s not usable here: %s", key, self.bucket, exc)

    async def write(self, key: str, change: Change) -> tuple[Record | None, Record | None]:
        """``KeyStore``'s writer: the change goes to the bucket, then here."""
        assert self.keys is not None
        deadline = time.monotonic() + self.write_wait
        msg_id = secrets.token_hex(12)
        while True:
            last = self.records.revs.get(key, 0)
            before = self.keys.record(key)
            after = change(before)
            if before is None and after is None:
                return None, None
            payload = None if after is None else msgspec.json.encode(after)
            try:
                revision = await self.nats.call(self.records.publish(key, payload, last, msg_id,
                                                                     deadline))
            except Conflict:
                if time.monotonic() >= deadline:
                    raise KeysUnavailableError(
                        f"API key {key} kept changing elsewhere meanwhile; nothing was "
                        f"changed, try again") from None
                await asyncio.sleep(0.05)  # this gateway's watch brings the newer revision
                msg_id = secrets.token_hex(12)
                continue
            except Exception as exc:
                log.warning("API key %s: the shared key store did not take the change: %s: %s",
                            key, type(exc).__name__, exc)  # repr hides a JetStream error's code
                if before is None and payload is not None:
                    self.records.settle_create(key, payload)
                    raise KeysUnavailableError(
                        "the shared API key store (NATS) did not confirm the new key in time; "
                        "no key was created, try again") from exc
                raise KeysUnavailableError(
                    "the shared API key store (NATS) did not confirm the change in time; it "
                    "applies only if NATS stored it, so send it again (it is idempotent)"
                ) from exc
            if self.records.newer(key, revision):
                self.keys.apply(key, after)
            return before, after
