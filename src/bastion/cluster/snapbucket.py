"""Snapshots in a JetStream object store, so a new replica or gateway joins from a snapshot
plus the stream tail instead of replaying the whole log.

The object is the snapshot file byte for byte (same header, checksums and state hash as the
local files); ``latest`` is replaced by each upload.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from nats.js.errors import NotFoundError

from bastion.core.codec import decode_state
from bastion.core.engine import Engine
from bastion.journal.errors import DurabilityError
from bastion.journal.jetstream import retry_transient
from bastion.snapshots.format import SnapshotCorruptError, check_payload, decode_header

log = logging.getLogger("bastion.cluster")

LATEST = "latest"

#: one attempt at reading the snapshot: the object store's reader waits for its chunks with
#: no deadline, and they never come if an upload replaces the object meanwhile
GET_TIMEOUT = 15.0


class SnapshotBucket:
    def __init__(self, js: Any, bucket: str, replicas: int = 3) -> None:
        self.js = js
        self.bucket = bucket
        self.replicas = replicas
        self._obs: Any = None

    async def _store(self) -> Any:
        if self._obs is None:
            async def bind() -> Any:
                try:
                    return await self.js.object_store(self.bucket)
                except NotFoundError:
                    return await self.js.create_object_store(bucket=self.bucket,
                                                             replicas=self.replicas)

            self._obs = await retry_transient(bind, f"snapshot bucket {self.bucket}")
        return self._obs

    async def upload(self, path: Path) -> int:
        blob = path.read_bytes()
        header, _ = decode_header(blob, path.name)
        obs = await self._store()
        await obs.put(LATEST, blob)
        return header.seq

    async def load(self) -> tuple[Engine, int, int] | None:
        """``(engine, seq, term)`` from the latest snapshot, every check passed; None if
        there is none. A damaged one is an error (never silently start from scratch)."""
        obs = await self._store()

        async def fetch() -> Any:
            try:
                return await asyncio.wait_for(obs.get(LATEST), GET_TIMEOUT)
            except NotFoundError:
                return None

        try:
            result = await retry_transient(fetch, f"snapshot bucket {self.bucket}")
        except DurabilityError as exc:
            # the stream keeps everything (no limits, no purge): a replay is only slower
            log.warning("no snapshot could be read (%s): replaying the stream instead", exc)
            return None
        if result is None:
            return None
        blob = bytes(result.data or b"")
        if not blob:
            return None
        header, offset = decode_header(blob, f"{self.bucket}/{LATEST}")
        body = blob[offset:]
        check_payload(header, body, f"{self.bucket}/{LATEST}")
        engine = Engine.from_state(decode_state(body), copy=False)
        if engine.seq != header.seq or engine.state_hash() != header.state_hash:
            raise SnapshotCorruptError(f"{self.bucket}/{LATEST}: state does not match its header")
        return engine, header.seq, header.term


def check_timeline(term_at_seq: int, term: int, seq: int) -> None:
    if term_at_seq != term:
        raise DurabilityError(f"snapshot at seq {seq} has term {term}, the stream has "
                              f"{term_at_seq} there", code="SNAPSHOT_TIMELINE")
