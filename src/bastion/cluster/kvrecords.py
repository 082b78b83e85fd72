"""Records every gateway of a shard shares: one replicated JetStream KV bucket, written
compare-and-set and followed by a watch (the machinery under the shared API keys and the
shared status state).

- A write is stored only if the key is still at the revision this gateway last saw
  (``Nats-Expected-Last-Subject-Sequence``), with a ``Nats-Msg-Id`` so a retry after a lost ack
  is stored once; it is retried while NATS elects, up to a deadline.
- Every gateway watches the bucket from the start (current values, then updates) and hands each
  entry newer than the revision it holds for that key to its consumer, on the consumer's loop;
  the whole bucket is re-read every ``resync_every`` seconds, so what a broken watch missed is
  applied at the latest then.
- A create whose outcome is unknown (its ack was lost; it may still be stored once the quorum is
  back) is settled in the background: a delete marker that lands only on a never-written key,
  else a delete of exactly that record by its revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from nats.js import api
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE

from bastion.journal.errors import DurabilityError
from bastion.journal.jetstream import FENCE_CODES, hedged, is_transient, retry_transient
from bastion.journal.natsloop import NatsLoop

log = logging.getLogger("bastion.cluster.kv")

#: ``(key, revision, value)`` for an entry newer than the one held; value None: deleted
Consumer = Callable[[str, int, bytes | None], None]


class Conflict(Exception):
    """The key changed since this gateway last saw it."""


async def first_value(kv: Any, key: str, value: bytes, what: str) -> bytes:
    """``value`` stored at ``key`` unless another gateway stored one first: the stored one."""
    async def attempt() -> bytes:
        try:
            await kv.create(key, value)
            return value
        except (KeyWrongLastSequenceError, KeyNotFoundError):
            pass  # taken (KeyNotFound: the replica asked has not got it yet)
        try:
            entry = await hedged(lambda: kv.get(key))
        except KeyNotFoundError:
            raise TimeoutError(f"{key} not readable yet") from None  # ask again
        return bytes(entry.value)

    stored: bytes = await retry_transient(attempt, what)
    return stored


class KvRecords:
    def __init__(self, nats: NatsLoop, bucket: str, replicas: int, what: str, *,
                 resync_every: float = 30.0, max_age: float = 0.0) -> None:
        self.nats = nats
        self.bucket = bucket
        self.replicas = replicas
        #: named in errors and logs ("API key bucket ...")
        self.what = what
        self.resync_every = resync_every
        self.max_age = max_age
        self.kv: Any = None
        #: the revision of each key this gateway holds (what a compare-and-set expects)
        self.revs: dict[str, int] = {}
        self._revs_lock = threading.Lock()
        self._consumer: Consumer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []  # on the NATS loop
        self._cleanups: set[asyncio.Task[None]] = set()

    async def open(self) -> Any:
        """Bind (or create) the bucket; on the NATS loop."""
        async def bind() -> Any:
            try:
                return await self.nats.js.key_value(self.bucket)
            except NotFoundError:
                return await self.nats.js.create_key_value(
                    bucket=self.bucket, history=1, replicas=self.replicas,
                    ttl=self.max_age or None)

        self.kv = await retry_transient(bind, f"{self.what} {self.bucket}")
        return self.kv

    async def follow(self, consumer: Consumer) -> None:
        """Watch the bucket: returns once every current entry went to ``consumer`` (called on
        this caller's loop), which then gets every update."""
        self._loop = asyncio.get_running_loop()
        self._consumer = consumer
        ready: asyncio.Future[None] = self._loop.create_future()
        self.nats.call_soon(self._start_watch, ready)
        await ready

    async def close(self) -> None:
        await self.nats.call(self._stop())

    def newer(self, key: str, revision: int) -> bool:
        """Take note of ``revision`` of ``key``; False if this gateway holds it or a later one."""
        with self._revs_lock:
            if revision <= self.revs.get(key, 0):
                return False
            self.revs[key] = revision
            return True

    # --- on the NATS loop ---------------------------------------------------------------------

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start_watch(self, ready: asyncio.Future[None]) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watch(ready)), loop.create_task(self._resync())]

    async def read_all(self) -> list[Any]:
        watcher = await self.kv.watchall()
        try:
            entries = []
            while (entry := await watcher.updates(timeout=5)) is not None:
                entries.append(entry)
            return entries
        finally:
            await watcher.stop()

    async def _resync(self) -> None:
        assert self._loop is not None
        while True:
            await asyncio.sleep(self.resync_every)
            try:
                entries = await self.read_all()
            except Exception as exc:
                log.info("%s: re-reading bucket %s failed: %r (next try in %.0f s)",
                         self.what, self.bucket, exc, self.resync_every)
                continue
            self._loop.call_soon_threadsafe(self._deliver, entries, None, True)

    async def _watch(self, ready: asyncio.Future[None]) -> None:
        assert self._loop is not None
        api_loop = self._loop
        try:
            watcher = await retry_transient(lambda: self.kv.watchall(),
                                            f"{self.what} {self.bucket}")
            initial = []
            while (entry := await watcher.updates(timeout=None)) is not None:
                initial.append(entry)
        except BaseException as exc:
            api_loop.call_soon_threadsafe(_settle, ready, exc)
            raise
        api_loop.call_soon_threadsafe(self._deliver, initial, ready, False)
        try:
            async for entry in watcher:
                if entry is not None:
                    api_loop.call_soon_threadsafe(self._deliver, [entry], None, False)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    async def publish(self, key: str, payload: bytes | None, last: int, msg_id: str,
                      deadline: float) -> int:
        """Store ``payload`` (None: a delete marker) if ``key`` is still at revision ``last``
        (0: never written); a retry after a lost ack carries the same message id, so it is
        stored once. Raises ``Conflict`` if the key moved on."""
        headers: dict[str, Any] = {api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value: str(last),
                                   api.Header.MSG_ID.value: msg_id}
        if payload is None:
            headers[KV_OP] = KV_DEL
        while True:
            timeout = max(0.2, min(1.0, deadline - time.monotonic()))
            try:
                ack = await self.nats.js.publish(f"$KV.{self.bucket}.{key}", payload or b"",
                                                 headers=headers, timeout=timeout)
                return int(ack.seq)
            except APIError as exc:
                if (exc.err_code or 0) in FENCE_CODES:
                    raise Conflict from exc
                if not is_transient(exc) or time.monotonic() >= deadline:
                    raise
            except Exception as exc:
                if not is_transient(exc) or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(0.1)

    async def _remove_if_stored(self, key: str, payload: bytes) -> None:
        delay = 1.0
        subject = f"$KV.{self.bucket}.{key}"
        for _ in range(200):
            try:
                try:
                    await self.publish(key, None, 0, secrets.token_hex(12),
                                       time.monotonic() + 2.0)
                    return  # never stored: the marker keeps it so
                except Conflict:
                    pass
                msg = await self.nats.js.get_msg(f"KV_{self.bucket}", subject=subject)
                if msg.data != payload:
                    return  # already removed or changed since
                await self.publish(key, None, int(msg.seq or 0), secrets.token_hex(12),
                                   time.monotonic() + 2.0)
                log.warning("%s %s: its create was stored after the bucket failed to confirm "
                            "it in time; removed again", self.what, key)
                return
            except Conflict:
                continue
            except Exception as exc:
                log.info("%s %s: settling an unconfirmed create: %r (retrying)", self.what, key,
                         exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    def settle_create(self, key: str, payload: bytes) -> None:
        """A create of ``payload`` at ``key`` was not confirmed: make sure it is not stored."""
        def start() -> None:
            task = asyncio.get_running_loop().create_task(self._remove_if_stored(key, payload))
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)

        self.nats.call_soon(start)

    # --- on the consumer's loop ---------------------------------------------------------------

    def _deliver(self, entries: list[Any], ready: asyncio.Future[None] | None,
                 resync: bool) -> None:
        assert self._consumer is not None
        applied = 0
        for entry in entries:
            revision = int(entry.revision)
            if not self.newer(entry.key, revision):
                continue
            applied += 1
            deleted = entry.operation in (KV_DEL, KV_PURGE) or not entry.value
            try:
                self._consumer(entry.key, revision, None if deleted else bytes(entry.value))
            except Exception:
                log.exception("%s %s from bucket %s not usable here", self.what, entry.key,
                              self.bucket)
        if resync and applied:
            log.warning("%s: %d change(s) applied by the periodic re-read of bucket %s before "
                        "the watch delivered them", self.what, applied, self.bucket)
        if ready is not None:
            _settle(ready, None)


def _settle(future: asyncio.Future[None], exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc if isinstance(exc, Exception) else
                             DurabilityError("KV watch cancelled"))
