"""The WebSocket wire protocol (uvicorn's websockets sans-I/O one) with the parser's work per
turn of the event loop bounded, so no client can hold the loop with what it sends.

uvicorn parses everything one socket read returns (up to 256 KiB with uvloop) before it
pauses reading: 256 KiB of 15-byte frames is ~17,000 frames, 100-200 ms of the loop on this
machine, and after each reconnect of a flooding client the next read does it again. Here a
read is parsed ``READ_SLICE`` bytes at a time: the rest waits, with the socket's reading
paused, until the application has taken every frame parsed so far (TCP then pushes back on
the sender). A client that keeps sending after the server's close frame is cut instead of
being parsed to the end of its flood.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

#: bytes parsed per turn: a few hundred tiny frames (a few ms) at most, while a pipelining
#: client still gets dozens of orders per turn
READ_SLICE = 8 * 1024
#: after our close frame, a read at least this large is a flood, not the peer's close reply
CLOSING_READ_MAX = 1024
#: pongs the kernel could not send yet, past which a pinging client is cut
PONG_BACKLOG_MAX = 256 * 1024


class BoundedWebSocketProtocol(WebSocketsSansIOProtocol):
    """``WebSocketsSansIOProtocol`` parsing at most ``READ_SLICE`` bytes per loop turn."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: received and not parsed yet (reading is paused while this is not empty)
        self.backlog = b""

    def data_received(self, data: bytes) -> None:
        if self.close_sent:
            self.backlog = b""
            if len(data) >= CLOSING_READ_MAX:
                self.transport.close()
                return
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
        super().data_received(chunk)
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
        conn = self.conn
        try:
            for data in frames:
                conn.send_text(data)
        except InvalidState:
            raise ClientDisconnected() from None
        self.transport.write(b"".join(conn.data_to_send()))

    async def receive(self) -> Any:
        message = await self.queue.get()
        if self.queue.empty() and self.read_paused:
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
