"""The replicated journal: a NATS JetStream stream (R3, file storage, every write fsynced).

One stream message is one group-commit block (``framing.encode_block``: the same checksummed
block format as the local files), holding many commands; the block's epoch is the writer's
lease revision (its term), and is published on ``<subject>.<term>``. Every append is fenced by
``Nats-Expected-Last-Sequence`` (the stream sequence this writer last saw), so a deposed
leader's append is refused by the log itself, and by ``Nats-Expected-Last-Subject-Sequence`` on
its term's subject (where its own previous message must be), so with several messages in
flight none can land after another writer's message that happens to fill the gap. It carries
``Nats-Msg-Id: <term>.<first seq>``, so a retry after a lost ack is deduplicated by the stream
instead of written twice. (``Nats-Expected-Last-Msg-Id`` would say the same, but nats-server
2.15 applies it on every replica and a mismatch stops the stream: "critical write error".)

Command sequence numbers (what the engine sees) and stream sequence numbers (messages) differ;
``locate`` maps one to the other by binary search over the stream (messages are in command
order), cached.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import api
from nats.js.errors import APIError, NoStreamResponseError, NotFoundError

from bastion.journal.errors import (
    DurabilityError,
    FencedError,
    JournalClosedError,
    JournalCorruptError,
)
from bastion.journal.framing import Block, encode_block, parse
from bastion.journal.natsloop import NatsLoop

if TYPE_CHECKING:
    from bastion.journal.jscommit import PipelinedCommitter

log = logging.getLogger("bastion.journal.jetstream")
T = TypeVar("T")

WRONG_LAST_SEQUENCE = 10071
#: wrong last sequence (stream-wide or on the subject: our predecessor is not ours)
FENCE_CODES = (WRONG_LAST_SEQUENCE, 10164)
#: stay under nats-server's default 1 MiB max_payload with room for headers
MAX_MESSAGE_BYTES = 900 * 1024
CHECKPOINT_HEADER = "Bastion-Checkpoint"
TRANSIENT = (NatsTimeout, asyncio.TimeoutError, NoRespondersError, NoStreamResponseError,
             ConnectionError, OSError)


def is_transient(exc: BaseException) -> bool:
    """Errors after which the message may or may not be stored: resolve by reading the log."""
    if isinstance(exc, TRANSIENT):
        return True
    if isinstance(exc, APIError):
        # some subclasses (KeyNotFoundError) are raised without a code
        code, err_code = getattr(exc, "code", None), getattr(exc, "err_code", None)
        return code in (503, 408) or (err_code or 0) in (10008, 10023)
    return type(exc).__name__ in ("ConnectionClosedError", "StaleConnectionError",
                                  "OutboundBufferLimitError", "FlushTimeoutError")


async def retry_transient(fn: Callable[[], Any], what: str, wait: float = 30.0,
                          pause: float = 0.3) -> Any:
    """``await fn()`` until it stops failing with transient errors (a cluster still forming or
    electing), at most ``wait`` seconds; then a clear error naming ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        try:
            return await fn()
        except Exception as exc:
            if not is_transient(exc) or loop.time() > deadline:
                raise DurabilityError(f"{what} unavailable: {type(exc).__name__}: {exc}",
                                      code="NATS_UNAVAILABLE") from exc
        await asyncio.sleep(pause)


#: during an election a JetStream request gets no answer at all, and the client would wait
#: out its whole timeout (2 s) even when a new leader is ready a moment after it was sent
HEDGE_EVERY = 0.25
#: a retried append waits this long for its ack before the log is asked again
RETRY_PUBLISH_TIMEOUT = 0.5
#: a leader read past the stream's end answers "not found" at once, or (after refused
#: appends, or mid-election) never: either way it is the end
PAST_END_TIMEOUT = 0.5


async def hedged(make: Callable[[], Awaitable[T]], every: float = HEDGE_EVERY) -> T:
    """A read (never a write) asked again every ``every`` seconds without dropping the earlier
    asks: the first answer wins. A slow but alive server still answers the first ask; a
    leader elected meanwhile answers a fresh one at once. Any error ends it (the caller
    decides what is transient); the client's own timeout bounds each ask."""
    tasks: list[asyncio.Future[T]] = []
    try:
        while True:
            tasks.append(asyncio.ensure_future(make()))
            done, _ = await asyncio.wait(tasks, timeout=every,
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                return task.result()
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # retrieved: the first answer already decided


class Outgoing(NamedTuple):
    subject: str
    payload: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Tail:
    """The end of the log: last message (stream seq), last command seq and its term."""

    stream_seq: int
    last_seq: int
    term: int


def unresolved(reason: BaseException) -> DurabilityError:
    """The writer stopped while this append's outcome was unknown: it may be in the log, so
    the caller must not retry it blindly (unlike a fenced append, which is known absent)."""
    return DurabilityError(f"append outcome unknown, writer stopped ({reason})",
                           code="UNRESOLVED")


def msg_id(term: int, first_seq: int) -> str:
    return f"{term}.{first_seq}"


def decode_message(data: bytes, stream_seq: int, stream: str) -> Block:
    found = parse(data, 0)
    if not isinstance(found, Block) or found.end != len(data):
        seq = getattr(found, "seq", None) or 0
        raise JournalCorruptError(f"{stream}#{stream_seq}", 0, seq, "message is not one intact block")
    return found


async def ensure_stream(js: Any, stream: str, subject: str, replicas: int,
                        wait: float = 30.0) -> None:
    """Create the shard's stream if missing (idempotent; retried while the cluster forms)."""
    config = api.StreamConfig(
        name=stream, subjects=[f"{subject}.>"], num_replicas=replicas,
        storage=api.StorageType.FILE, retention=api.RetentionPolicy.LIMITS,
        discard=api.DiscardPolicy.NEW, duplicate_window=120.0,
        deny_delete=True, deny_purge=True, allow_direct=False,
        max_msg_size=MAX_MESSAGE_BYTES + 64 * 1024,
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        try:
            await js.stream_info(stream)
            return
        except NotFoundError:
            pass
        except Exception as exc:
            if loop.time() > deadline:
                raise DurabilityError(f"stream {stream} unavailable: {exc!r}",
                                      code="STREAM_UNAVAILABLE") from exc
            await asyncio.sleep(0.3)
            continue
        try:
            await js.add_stream(config)
            return
        except Exception as exc:
            if loop.time() > deadline:
                raise DurabilityError(f"cannot create stream {stream}: {exc!r}",
                                      code="STREAM_UNAVAILABLE") from exc
            await asyncio.sleep(0.3)


class JetStreamJournal:
    """``Journal`` over one JetStream stream. Sync methods run on the ``NatsLoop`` thread; the
    ``*_async`` ones must be awaited on that loop (the committer does)."""

    #: the committer packs records into messages no larger than this
    max_message_bytes = MAX_MESSAGE_BYTES

    def __init__(self, nats: NatsLoop, stream: str, subject: str, *,
                 publish_timeout: float = 2.0, owns_nats: bool = False) -> None:
        self.nats = nats
        self.stream = stream
        self.subject = subject
        self.publish_timeout = publish_timeout
        self._owns_nats = owns_nats
        self._closed = False
        self._index: OrderedDict[int, tuple[int, int, int]] = OrderedDict()
        self._tail = nats.run(self.fetch_tail())
        self._term = self._tail.term
        self.guard: Callable[[], BaseException | None] | None = None
        self.checkpoint_every = 0.0
        self.active: PipelinedCommitter | None = None

    # --- the Journal protocol -----------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return self._tail.last_seq

    @property
    def first_seq(self) -> int:
        return 1

    @property
    def epoch(self) -> int:
        return self._term

    @property
    def tail(self) -> Tail:
        return self._tail

    def append(self, records: list[bytes], expected_last_seq: int) -> int:
        self._check_open()
        return self.nats.run(self.append_async(records, expected_last_seq, self._term),
                             timeout=None)

    def read(self, from_seq: int, to_seq: int | None = None) -> Iterator[tuple[int, bytes]]:
        self._check_open()
        if to_seq is None:
            to_seq = self.refresh().last_seq
        if from_seq > to_seq or to_seq <= 0:
            return
        from_seq = max(from_seq, 1)
        start, _ = self.nats.run(self.locate(from_seq))
        expect = from_seq
        for stream_seq, block in self._iter_blocks(start):
            for i, payload in enumerate(block.payloads):
                seq = block.first_seq + i
                if seq < expect:
                    continue
                if seq != expect:
                    raise JournalCorruptError(f"{self.stream}#{stream_seq}", 0, seq,
                                              f"gap: expected seq {expect}")
                if seq > to_seq:
                    return
                yield seq, payload
                expect += 1
            if expect > to_seq:
                return

    def term_at(self, seq: int) -> int:
        if seq <= 0:
            return 0
        _, block = self.nats.run(self.locate(seq))
        return block.epoch

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_nats:
            self.nats.close()

    # --- writer side --------------------------------------------------------------------

    def become_writer(self, term: int, tail: Tail, *,
                      guard: Callable[[], BaseException | None] | None = None,
                      checkpoint_every: float = 0.0) -> None:
        """Append from ``tail`` on under ``term`` (the lease revision this writer holds);
        ``guard`` says why publishing must stop (lease lost), checked before every send."""
        self._term = term
        self._tail = tail
        self.guard = guard
        self.checkpoint_every = checkpoint_every

    def committer(self, *, max_records: int = 8192, max_delay: float = 0.0) -> PipelinedCommitter:
        """The node's group committer for this backend: pipelined publishing."""
        from bastion.journal.jscommit import PipelinedCommitter

        self.active = PipelinedCommitter(self, term=self._term, max_records=max_records,
                                         guard=self.guard, checkpoint_every=self.checkpoint_every)
        return self.active

    def refresh(self) -> Tail:
        self._tail = self.nats.run(self.fetch_tail())
        return self._tail

    def message(self, records: list[bytes], first_seq: int, term: int,
                expected_stream_seq: int, previous_own: int, checkpoint: bool = False
                ) -> Outgoing:
        """The block and its fence: the stream must end at ``expected_stream_seq`` and the
        last message on this term's subject must be at ``previous_own`` (0: none yet)."""
        headers = {"Nats-Expected-Last-Sequence": str(expected_stream_seq),
                   "Nats-Expected-Last-Subject-Sequence": str(previous_own),
                   "Nats-Msg-Id": msg_id(term, first_seq)}
        if checkpoint:
            headers[CHECKPOINT_HEADER] = "1"
        return Outgoing(f"{self.subject}.{term}", encode_block(records, first_seq, term), headers)

    async def append_async(self, records: list[bytes], expected_last_seq: int, term: int) -> int:
        tail = self._tail
        if expected_last_seq != tail.last_seq:
            raise FencedError(expected_last_seq, tail.last_seq, "writer's own view")
        own = tail.stream_seq if tail.term == term else 0
        out = self.message(records, expected_last_seq + 1, term, tail.stream_seq, own)
        outcome = await self.publish_resolved(out, tail.stream_seq)
        if outcome != "stored":
            fresh = await self.fetch_tail()
            self._tail = fresh
            raise FencedError(expected_last_seq, fresh.last_seq, f"stream {self.stream}")
        self.advance(tail.stream_seq + 1, expected_last_seq + len(records), term)
        return self._tail.last_seq

    def advance(self, stream_seq: int, last_seq: int, term: int) -> None:
        if stream_seq > self._tail.stream_seq:
            self._tail = Tail(stream_seq, last_seq, term)

    async def publish_resolved(self, out: Outgoing, expected_stream_seq: int,
                               stop: Callable[[], BaseException | None] | None = None) -> str:
        """Publish until the outcome is known: ``"stored"`` (ours is at expected + 1) or
        ``"fenced"`` (someone else's is). Transient failures are resolved by reading the log
        and retried with the same message id; ``stop`` (lease lost, predecessor fenced) ends
        the attempt with its exception, leaving the outcome unacknowledged."""
        js = self.nats.js
        t0 = time.monotonic()
        attempts: list[str] = []  # why each earlier attempt failed, and when (for the log)
        while True:
            if stop is not None and (reason := stop()) is not None:
                raise unresolved(reason)
            sent = time.monotonic()
            timeout = min(self.publish_timeout, RETRY_PUBLISH_TIMEOUT) if attempts else \
                self.publish_timeout
            try:
                ack = await js.publish(out.subject, out.payload, timeout=timeout,
                                       headers=dict(out.headers))
                if ack.seq == expected_stream_seq + 1:
                    if attempts:
                        log.info("append at %d stored after %.3f s, attempt %d sent at +%.3f "
                                 "s (earlier: %s)", ack.seq, time.monotonic() - t0,
                                 len(attempts) + 1, sent - t0, "; ".join(attempts[-4:]))
                    return "stored"
                raise DurabilityError(f"stream stored at {ack.seq}, expected "
                                      f"{expected_stream_seq + 1}", code="STREAM_MISMATCH")
            except APIError as exc:
                attempts.append(f"+{sent - t0:.3f} s {type(exc).__name__} {exc.err_code} "
                                f"after {time.monotonic() - sent:.3f} s")
                if exc.err_code in FENCE_CODES:
                    pause = 0.005  # or a predecessor of ours is not in yet
                elif is_transient(exc):
                    pause = 0.05
                else:
                    raise DurabilityError(f"stream {self.stream} refused the append: {exc}",
                                          code="STREAM_REFUSED") from exc
            except Exception as exc:
                if not is_transient(exc):
                    raise
                attempts.append(f"+{sent - t0:.3f} s {type(exc).__name__} after "
                                f"{time.monotonic() - sent:.3f} s")
                pause = 0.05
            # Outcome unknown: the log decides (a retry of a stored message would be
            # deduplicated, but only if its fence headers still match, so ask first).
            state = await self.whose(expected_stream_seq + 1, out.headers["Nats-Msg-Id"], stop)
            if state != "absent":
                return state
            await asyncio.sleep(pause)

    async def whose(self, stream_seq: int, my_id: str,
                    stop: Callable[[], BaseException | None] | None = None) -> str:
        """Is the message at ``stream_seq`` ours (``stored``), someone else's (``fenced``), or
        not there yet (``absent``)?"""
        while True:
            if stop is not None and (reason := stop()) is not None:
                raise unresolved(reason)
            try:
                info = await hedged(lambda: self.nats.js.stream_info(self.stream))
                if info.state.last_seq < stream_seq:
                    return "absent"
                raw = await hedged(lambda: self.nats.js.get_msg(self.stream, stream_seq))
            except NotFoundError:
                return "absent"
            except Exception as exc:
                if not is_transient(exc):
                    raise
                await asyncio.sleep(0.05)
                continue
            found = (raw.headers or {}).get("Nats-Msg-Id")
            return "stored" if found == my_id else "fenced"

    # --- reading ------------------------------------------------------------------------

    async def fetch_tail(self) -> Tail:
        js = self.nats.js
        info = await self._retry(lambda: hedged(lambda: js.stream_info(self.stream)))
        last = info.state.last_seq
        # Stream info can be answered from a lagging replica's view (seen with a server whose
        # store was full): probe past it with leader reads until there is nothing more. A read
        # past the end may get no answer at all (seen after refused appends): that ends it too.
        while True:
            try:
                await asyncio.wait_for(js.get_msg(self.stream, last + 1), PAST_END_TIMEOUT)
            except Exception:
                break
            last += 1
        if not last:
            return Tail(0, 0, 0)
        raw = await self._retry(lambda: hedged(lambda: js.get_msg(self.stream, last)))
        block = decode_message(raw.data or b"", last, self.stream)
        return Tail(last, block.last_seq, block.epoch)

    async def block_at(self, stream_seq: int) -> Block:
        js = self.nats.js
        raw = await self._retry(lambda: hedged(lambda: js.get_msg(self.stream, stream_seq)))
        block = decode_message(raw.data or b"", stream_seq, self.stream)
        self._remember(stream_seq, block)
        return block

    def _remember(self, stream_seq: int, block: Block) -> None:
        self._index[stream_seq] = (block.first_seq, len(block.payloads), block.epoch)
        if len(self._index) > 4096:
            self._index.popitem(last=False)

    async def locate(self, seq: int) -> tuple[int, Block]:
        """The message holding command ``seq``: binary search over stream sequence numbers."""
        tail = self._tail if self._tail.last_seq >= seq else await self.fetch_tail()
        if seq > tail.last_seq or seq < 1:
            raise DurabilityError(f"seq {seq} is not in stream {self.stream} (last "
                                  f"{tail.last_seq})", code="SEQ_NOT_FOUND")
        lo, hi = 1, tail.stream_seq
        while lo <= hi:
            mid = (lo + hi) // 2
            block = await self.block_at(mid)
            if seq < block.first_seq:
                hi = mid - 1
            elif seq > block.last_seq:
                lo = mid + 1
            else:
                return mid, block
        raise JournalCorruptError(self.stream, 0, seq, "no message holds this seq")

    def _iter_blocks(self, start: int) -> Iterator[tuple[int, Block]]:
        stream_seq = start
        while True:
            end = self._tail.stream_seq
            if stream_seq > end:
                return
            chunk = self.nats.run(self.fetch_range(stream_seq, min(end, stream_seq + 255)))
            yield from chunk
            stream_seq += len(chunk)

    async def fetch_range(self, first: int, last: int) -> list[tuple[int, Block]]:
        """Messages ``first..last`` by leader reads (concurrently)."""
        tasks = [self.block_at(s) for s in range(first, last + 1)]
        blocks = await asyncio.gather(*tasks)
        return list(zip(range(first, last + 1), blocks, strict=True))

    async def _retry(self, fn: Any, wait: float = 30.0) -> Any:
        """Reads ride out elections (a loaded machine can take many seconds to elect)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            try:
                return await fn()
            except NotFoundError:
                raise
            except Exception as exc:
                if not is_transient(exc) or loop.time() > deadline:
                    raise
                await asyncio.sleep(0.1)

    def _check_open(self) -> None:
        if self._closed:
            raise JournalClosedError("journal is closed")
