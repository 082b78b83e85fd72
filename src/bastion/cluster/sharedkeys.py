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
import contextlib
import logging
import secrets
import time
from typing import Any

import msgspec
from nats.js import api
from nats.js.errors import APIError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE

from bastion.api.security.keys import Change, KeyStore, KeysUnavailableError, Record
from bastion.journal.errors import DurabilityError
from bastion.journal.jetstream import FENCE_CODES, hedged, is_transient, retry_transient
from bastion.journal.natsloop import NatsLoop

log = logging.getLogger("bastion.cluster.keys")

#: holds ``KeyStore.server_key_check()``: a gateway with another server key refuses to start
CHECK_KEY = "server.check"


class _Conflict(Exception):
    """The key changed since this gateway last saw it."""


class SharedKeys:
    def __init__(self, nats: NatsLoop, bucket: str, replicas: int,
                 write_wait: float = 5.0, resync_every: float = 30.0) -> None:
        self.nats = nats
        self.bucket = bucket
        self.replicas = replicas
        #: how long a change may wait for the bucket (an election) before it fails with 503
        self.write_wait = write_wait
        #: the whole bucket is read again this often: what a watch failed to deliver (a
        #: revoke above all) is applied at the latest then
        self.resync_every = resync_every
        self.kv: Any = None
        self.keys: KeyStore | None = None
        self._revs: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []  # on the NATS loop
        self._cleanups: set[asyncio.Task[None]] = set()

    async def attach(self, keys: KeyStore) -> None:
        """Make ``keys`` a replica of the bucket: check the server key, load what the bucket
        holds, then follow it (call from the API's loop, before serving)."""
        self._loop = asyncio.get_running_loop()
        self.kv = await self.nats.call(self._open())
        await self.nats.call(self._check(keys.server_key_check()))
        self.keys = keys
        keys.share(self.write)
        ready: asyncio.Future[None] = self._loop.create_future()
        self.nats.call_soon(self._start_watch, ready)
        await ready
        log.info("API keys: %d from bucket %s", sum(1 for k in self._revs if keys.get(k)),
                 self.bucket)

    async def close(self) -> None:
        await self.nats.call(self._stop())

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- on the NATS loop ---------------------------------------------------------------------

    async def _open(self) -> Any:
        async def bind() -> Any:
            try:
                return await self.nats.js.key_value(self.bucket)
            except NotFoundError:
                return await self.nats.js.create_key_value(bucket=self.bucket, history=1,
                                                           replicas=self.replicas)

        return await retry_transient(bind, f"API key bucket {self.bucket}")

    async def _check(self, value: str) -> None:
        async def stored() -> bytes:
            try:
                await self.kv.create(CHECK_KEY, value.encode())
                return value.encode()
            except KeyWrongLastSequenceError:
                entry = await hedged(lambda: self.kv.get(CHECK_KEY))
                return bytes(entry.value)

        if await retry_transient(stored, f"API key bucket {self.bucket}") != value.encode():
            err = DurabilityError(
                f"this gateway's server key differs from the one the other gateways use "
                f"(bucket {self.bucket}): every gateway must get the same BASTION_SERVER_KEY "
                f"(`bastion cluster up` keeps it in DIR/server.key)",
                code="SERVER_KEY_MISMATCH")
            log.error("%s", err)
            raise err

    def _start_watch(self, ready: asyncio.Future[None]) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._follow(ready)), loop.create_task(self._resync())]

    async def _resync(self) -> None:
        assert self._loop is not None
        while True:
            await asyncio.sleep(self.resync_every)
            try:
                watcher = await self.kv.watchall()
                try:
                    entries = []
                    while (entry := await watcher.updates(timeout=5)) is not None:
                        entries.append(entry)
                finally:
                    await watcher.stop()
            except Exception as exc:
                log.info("API keys: re-reading bucket %s failed: %r (next try in %.0f s)",
                         self.bucket, exc, self.resync_every)
                continue
            self._loop.call_soon_threadsafe(self._apply_resync, entries)

    async def _follow(self, ready: asyncio.Future[None]) -> None:
        assert self._loop is not None
        api_loop = self._loop
        try:
            watcher = await retry_transient(lambda: self.kv.watchall(),
                                            f"API key bucket {self.bucket}")
            initial = []
            while (entry := await watcher.updates(timeout=None)) is not None:
                initial.append(entry)
        except BaseException as exc:
            api_loop.call_soon_threadsafe(_settle, ready, exc)
            raise
        api_loop.call_soon_threadsafe(self._apply_initial, initial, ready)
        try:
            async for entry in watcher:
                if entry is not None:
                    api_loop.call_soon_threadsafe(self._apply_entry, entry)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    async def _publish(self, key: str, rec: Record | None, last: int, msg_id: str,
                       deadline: float) -> int:
        """Store ``rec`` (None: a delete marker) if the key is still at revision ``last``;
        a retry after a lost ack carries the same message id, so it is stored once."""
        headers: dict[str, Any] = {api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value: str(last),
                                   api.Header.MSG_ID.value: msg_id}
        payload = b""
        if rec is None:
            headers[KV_OP] = KV_DEL
        else:
            payload = msgspec.json.encode(rec)
        while True:
            timeout = max(0.2, min(1.0, deadline - time.monotonic()))
            try:
                ack = await self.nats.js.publish(f"$KV.{self.bucket}.{key}", payload,
                                                 headers=headers, timeout=timeout)
                return int(ack.seq)
            except APIError as exc:
                if (exc.err_code or 0) in FENCE_CODES:
                    raise _Conflict from exc
                if not is_transient(exc) or time.monotonic() >= deadline:
                    raise
            except Exception as exc:
                if not is_transient(exc) or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(0.1)

    async def _remove_if_stored(self, key: str, payload: bytes) -> None:
        """A create whose outcome was unknown (it may still sit uncommitted in the bucket's
        Raft log and be stored once the quorum is back): settle it with a delete marker that
        only lands on a key that was never written; if the create was stored after all, it
        is that record, and it is deleted by its revision. Retried until settled."""
        delay = 1.0
        subject = f"$KV.{self.bucket}.{key}"
        for _ in range(200):
            try:
                try:
                    await self._publish(key, None, 0, secrets.token_hex(12),
                                        time.monotonic() + 2.0)
                    return  # never stored: the marker keeps it so
                except _Conflict:
                    pass
                msg = await self.nats.js.get_msg(f"KV_{self.bucket}", subject=subject)
                if msg.data != payload:
                    return  # already removed
                await self._publish(key, None, int(msg.seq or 0), secrets.token_hex(12),
                                    time.monotonic() + 2.0)
                log.warning("API key %s: its create was stored after the bucket failed to "
                            "confirm it in time; removed again", key)
                return
            except _Conflict:
                continue
            except Exception as exc:
                log.info("API key %s: settling an unconfirmed create: %r (retrying)", key, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    # --- on the API loop ----------------------------------------------------------------------

    def _apply_initial(self, entries: list[Any], ready: asyncio.Future[None]) -> None:
        for entry in entries:
            self._apply_entry(entry)
        _settle(ready, None)

    def _apply_resync(self, entries: list[Any]) -> None:
        newer = [e for e in entries
                 if e.key != CHECK_KEY and int(e.revision) > self._revs.get(e.key, 0)]
        for entry in newer:
            self._apply_entry(entry)
        if newer:
            log.warning("API keys: %d change(s) applied by the periodic re-read of bucket %s "
                        "before the watch delivered them", len(newer), self.bucket)

    def _apply_entry(self, entry: Any) -> None:
        if entry.key == CHECK_KEY:
            return
        deleted = entry.operation in (KV_DEL, KV_PURGE) or not entry.value
        rec = None if deleted else msgspec.json.decode(entry.value)
        self._install(entry.key, int(entry.revision), rec)

    def _install(self, key: str, revision: int, rec: Record | None) -> None:
        if revision <= self._revs.get(key, 0):
            return  # this gateway already holds that change or a later one
        self._revs[key] = revision
        assert self.keys is not None
        try:
            self.keys.apply(key, rec)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("API key %s from bucket %s not usable here: %s", key, self.bucket, exc)

    async def write(self, key: str, change: Change) -> tuple[Record | None, Record | None]:
        """``KeyStore``'s writer: the change goes to the bucket, then here."""
        assert self.keys is not None
        deadline = time.monotonic() + self.write_wait
        msg_id = secrets.token_hex(12)
        while True:
            last = self._revs.get(key, 0)
            before = self.keys.record(key)
            after = change(before)
            if before is None and after is None:
                return None, None
            try:
                revision = await self.nats.call(self._publish(key, after, last, msg_id,
                                                              deadline))
            except _Conflict:
                if time.monotonic() >= deadline:
                    raise KeysUnavailableError(
                        f"API key {key} kept changing elsewhere meanwhile; nothing was "
                        f"changed, try again") from None
                await asyncio.sleep(0.05)  # this gateway's watch brings the newer revision
                msg_id = secrets.token_hex(12)
                continue
            except Exception as exc:
                log.warning("API key %s: the shared key store did not take the change: %r",
                            key, exc)
                if before is None and after is not None:
                    self._clean_up(key, msgspec.json.encode(after))
                    raise KeysUnavailableError(
                        "the shared API key store (NATS) did not confirm the new key in time; "
                        "no key was created, try again") from exc
                raise KeysUnavailableError(
                    "the shared API key store (NATS) did not confirm the change in time; it "
                    "applies only if NATS stored it, so send it again (it is idempotent)"
                ) from exc
            self._install(key, revision, after)
            return before, after

    def _clean_up(self, key: str, payload: bytes) -> None:
        def start() -> None:
            task = asyncio.get_running_loop().create_task(self._remove_if_stored(key, payload))
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)

        self.nats.call_soon(start)


def _settle(future: asyncio.Future[None], exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc if isinstance(exc, Exception) else
                             DurabilityError("API key watch cancelled"))

