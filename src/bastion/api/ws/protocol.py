"""The WebSocket wire protocol (uvicorn's websockets sans-I/O one) with the parser's work per
turn of the event loop bounded, so no client can hold the loop with what it sends.

uvicorn parses everything one socket read returns (up to 256 KiB with uvloop) before it
pauses reading: 256 KiB of 15-byte frames is ~17,000 frames, 100-200 ms of the loop on this
machine, and after each reconnect of a flooding client the next read does it again. Here a
read is parsed ``READ_SLICE`` bytes at a time: the rest waits, with the socket's reading
paused, until the application has taken every frame parsed so far (TCP then pushes back on
the sender). A client that keeps sending after the server's close frame is cut instead of
being parsed to the end of its flood.

Once the endpoint ``attach``es its frame handler, each complete message goes to it straight
from the parser, in the same callback: no ASGI ``receive`` (a dict, a queue, a task wake-up
and a pause/resume of reading per message). The handler answers with the seconds reading must
stop (its frame budget); messages already parsed meanwhile wait, in order, until then.
``receive`` then only carries the disconnect. Small client frames, the common kind, are
parsed by ``api.ws.frames.parse_simple`` then; websockets' parser takes every other frame.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.protocol import State
from websockets.streams import StreamReader

from bastion.api.ws.frames import OTHER, parse_simple

#: bytes parsed per turn: a few hundred tiny frames (a few ms) at most, while a pipelining
#: client still gets dozens of orders per turn
READ_SLICE = 8 * 1024
#: after our close frame, a read at least this large is a flood, not the peer's close reply
CLOSING_READ_MAX = 1024
#: pongs the kernel could not send yet, past which a pinging client is cut
PONG_BACKLOG_MAX = 256 * 1024

#: an attached endpoint's handler: one message (``str`` for text, ``bytes`` for binary) in,
#: the seconds to stop reading this socket out (0 to read on, ``STOP`` until the close)
FrameSink = Callable[[str | bytes], float]
STOP = math.inf

#: the size limit when the server sets none
NO_LIMIT = 1 << 63
#: where websockets' parser waits when it is between frames
_BETWEEN_FRAMES = StreamReader.at_eof.__code__

#: the header of an unmasked final text frame of each length under 126
_HEADS = [bytes((0x81, size)) for size in range(126)]


class BoundedWebSocketProtocol(WebSocketsSansIOProtocol):
    """``WebSocketsSansIOProtocol`` parsing at most ``READ_SLICE`` bytes per loop turn."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: received and not parsed yet (reading is paused while this is not empty)
        self.backlog = b""
        #: the endpoint's handler once attached; messages then bypass ``receive``
        self.sink: FrameSink | None = None
        #: messages parsed while the sink holds reading (``read_paused``), in order
        self.held: deque[str | bytes] = deque()
        #: the start of a simple frame the next read completes, and its size in all
        self.partial = bytearray()
        self.partial_need = 0

    def attach(self, sink: FrameSink) -> None:
        """From now on hand every message to ``sink`` as it is parsed; the messages already
        queued for ``receive`` (sent before the handshake completed) go to it first."""
        self.sink = sink
        queue, keep = self.queue, []
        while not queue.empty():
            msg = queue.get_nowait()
            if msg["type"] == "websocket.receive":
                text = msg.get("text")
                self.held.append(text if text is not None else msg.get("bytes") or b"")
            else:
                keep.append(msg)
        for msg in keep:
            queue.put_nowait(msg)
        if self.held or self.read_paused:
            self._release()

    def send_receive_event_to_app(self) -> None:
        if self.sink is None:
            super().send_receive_event_to_app()
            return
        raw = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        self._message(raw, self.curr_msg_data_type == "text")

    def _message(self, raw: bytes, text: bool) -> None:
        """One whole message for the sink: now, or after its hold."""
        if self.close_sent:
            return
        data: str | bytes = raw
        if text:
            try:
                data = raw.decode()
            except UnicodeDecodeError:
                self.logger.info("Invalid UTF-8 sequence received from client.")
                self.conn.send_close(1007)
                self.handle_parser_exception()
                return
        if self.read_paused:
            self.held.append(data)
        else:
            self._deliver(data)

    def _deliver(self, data: str | bytes) -> None:
        assert self.sink is not None
        wait = self.sink(data)
        if wait > 0.0 and not self.close_sent:
            self.read_paused = True
            self.transport.pause_reading()
            if wait != STOP:
                self.loop.call_later(wait, self._release)

    def _release(self) -> None:
        """The sink's hold is over: it gets the messages held meanwhile, then reading goes on
        (unless one of them holds it again)."""
        self.read_paused = False
        held = self.held
        while held:
            if self.close_sent or self.disconnected:
                held.clear()
                return
            self._deliver(held.popleft())
            if self.read_paused:
                return
        if self.close_sent or self.disconnected:
            return
        if self.backlog:
            self._resume()
        else:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.close_sent:
            self.backlog = b""
            self.held.clear()
            if len(data) >= CLOSING_READ_MAX:
                self.transport.close()
                return
            if self.partial:  # websockets parses the frame begun before our close
                data = bytes(self.partial) + data
                self.partial.clear()
            super().data_received(data)
            return
        if self.backlog:  # a read that raced the pause: keep the byte order
            self.backlog += data
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        """Parse one slice of ``data``; keep the rest, with reading paused, for when the
        application has taken what was parsed (or for the next turn if nothing was)."""
        chunk, rest = data[:READ_SLICE], data[READ_SLICE:]
        self._parse(chunk)
        if self.close_sent or self.transport.is_closing():
            self.backlog = b""
            return
        self.backlog = rest
        if rest:
            self.transport.pause_reading()
            if not self.read_paused:  # only control frames or part of a frame so far
                self.loop.call_soon(self._resume)
        elif not self.read_paused:
            self.transport.resume_reading()

    def _parse(self, data: bytes) -> None:
        """The simple frames of ``data`` straight to the sink, the rest through websockets
        (all of it while websockets' parser is inside a frame or a fragmented message)."""
        partial = self.partial
        if not self._simple_ok():
            if partial:  # websockets parses from the start of the frame we began
                data = bytes(partial) + data
                partial.clear()
            super().data_received(data)
            return
        if partial:
            if len(partial) + len(data) < self.partial_need:
                partial += data
                return
            data = bytes(partial) + data
            partial.clear()
        limit = self.conn.max_message_size
        messages, pos, need = parse_simple(data, NO_LIMIT if limit is None else limit)
        for text, payload in messages:
            self._message(payload, text)
            if self.close_sent or self.transport.is_closing():
                return
        if pos < len(data):
            if need == OTHER:
                super().data_received(data[pos:])
            else:
                partial += memoryview(data)[pos:]
                self.partial_need = need

    def _simple_ok(self) -> bool:
        """Whether frames may skip websockets' parser: an attached sink, no extension, an
        open connection, no fragmented message under way, and websockets' parser between
        frames (then what it would parse next starts where ``parse_simple`` starts)."""
        conn = self.conn
        if self.sink is None or conn.extensions or conn.state is not State.OPEN \
                or conn.current_size is not None:
            return False
        if self.partial:
            return True
        gen: Any = conn.parser
        while (inner := getattr(gen, "gi_yieldfrom", None)) is not None:
            gen = inner
        return getattr(gen, "gi_code", None) is _BETWEEN_FRAMES

    def _resume(self) -> None:
        """Parse the next slice, unless a message still waits for the application."""
        if self.backlog and not self.read_paused and not self.close_sent:
            data, self.backlog = self.backlog, b""
            self._feed(data)

    def handle_ping(self) -> None:
        if self.transport.get_write_buffer_size() > PONG_BACKLOG_MAX:
            self.transport.abort()  # pings from a client that never reads its pongs
            return
        super().handle_ping()

    async def send_texts(self, frames: list[bytes]) -> None:
        """Text frames, already UTF-8, written in one transport write. The ASGI ``send``
        takes one ``str`` per frame: a decode, an encode and a socket write each, and a
        reply burst after an fsync is dozens of frames on one connection."""
        await self.writable.wait()
        if self.disconnected or self.close_sent or not self.handshake_complete:
            raise ClientDisconnected()
        if self.write_texts(frames):
            return
        conn = self.conn
        try:
            for data in frames:
                conn.send_text(data)
        except InvalidState:
            raise ClientDisconnected() from None
        self.transport.write(b"".join(conn.data_to_send()))

    def write_texts(self, frames: list[bytes]) -> bool:
        """Write ``frames`` now if the socket takes them as they are: open, writable, no
        extension (else False, and ``send_texts`` is the way). The header is what
        ``send_text`` writes for an unfragmented server frame (RFC 6455 5.2: FIN + text
        opcode, unmasked, the length in 7, 16 or 64 bits), without a ``Frame`` per reply."""
        conn = self.conn
        if not self.writable.is_set() or self.close_sent or self.disconnected \
                or conn.state is not State.OPEN or conn.extensions \
                or conn.expect_continuation_frame:
            return False
        parts: list[bytes] = []
        for data in frames:
            size = len(data)
            parts.append(_HEADS[size] if size < 126 else
                         b"\x81\x7e" + size.to_bytes(2, "big") if size < 0x10000 else
                         b"\x81\x7f" + size.to_bytes(8, "big"))
            parts.append(data)
        self.transport.write(b"".join(parts))
        return True

    async def receive(self) -> Any:
        message = await self.queue.get()
        if self.queue.empty() and self.read_paused and self.sink is None:
            self.read_paused = False
            if self.backlog:
                self._resume()
            else:
                self.transport.resume_reading()
        return message


def ws_protocol(impl: str) -> Any:
    """What uvicorn's ``ws=`` gets for ``BASTION_WS_IMPL``: the bounded protocol for the
    default ``websockets-sansio``, any other implementation by its uvicorn name."""
    return BoundedWebSocketProtocol if impl == "websockets-sansio" else impl
