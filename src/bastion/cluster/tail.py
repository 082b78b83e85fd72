"""Following the stream from a given message: an ordered push consumer (resets itself on
gaps or missed heartbeats) read on the NATS loop and handed over in batches."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from nats.errors import TimeoutError as NatsTimeout
from nats.js import api

from bastion.journal.framing import Block
from bastion.journal.jetstream import CHECKPOINT_HEADER, decode_message, retry_transient
from bastion.journal.natsloop import NatsLoop

Item = tuple[int, Block, bool]
#: creating the consumer takes milliseconds when the stream has a leader (first try only)
SUBSCRIBE_TIMEOUT = 1.0


class StreamTail:
    def __init__(self, nats: NatsLoop, stream: str, subject: str) -> None:
        self.nats = nats
        self.stream = stream
        self.subject = subject
        self._sub: Any = None

    async def _open(self, start: int) -> None:
        config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                                    opt_start_seq=max(start, 1))
        tries = 0

        def subscribe() -> Any:
            # a new leader: resume within 50 ms of it answering. The first ask (maybe sent
            # mid-election, never answered) is given up after SUBSCRIBE_TIMEOUT; later ones get
            # the client's whole timeout, so a slow (loaded) server still gets its consumer
            nonlocal tries
            tries += 1
            ask = self.nats.js.subscribe(
                f"{self.subject}.>", stream=self.stream, ordered_consumer=True,
                idle_heartbeat=1.0, config=config, pending_msgs_limit=1_000_000,
                pending_bytes_limit=512 * 1024 * 1024)
            return asyncio.wait_for(ask, SUBSCRIBE_TIMEOUT) if tries == 1 else ask

        self._sub = await retry_transient(subscribe, f"stream {self.stream}", pause=0.05)

    async def start(self, start_stream_seq: int) -> None:
        await self.nats.call(self._open(start_stream_seq))

    async def _take(self, max_items: int, timeout: float) -> list[Item]:
        sub = self._sub
        out: list[Item] = []
        try:
            msg = await sub.next_msg(timeout)
        except (TimeoutError, NatsTimeout):
            return out
        while True:
            seq = msg.metadata.sequence.stream
            headers = msg.headers or {}
            out.append((seq, decode_message(msg.data, seq, self.stream),
                        CHECKPOINT_HEADER in headers))
            if len(out) >= max_items or sub.pending_msgs == 0:
                return out
            msg = await sub.next_msg(0.5)

    async def take(self, max_items: int = 256, timeout: float = 0.5) -> list[Item]:
        """Up to ``max_items`` messages, waiting at most ``timeout`` for the first."""
        return await self.nats.call(self._take(max_items, timeout))

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            with contextlib.suppress(Exception):
                await self.nats.call(sub.unsubscribe())
