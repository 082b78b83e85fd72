"""The connection layer's two clocks (``api.security.protocol``) on a real socket: the
keep-alive timeout and the header timeout are kept lazily (a request stamps the time, one
timer per connection acts or re-arms), and must cut exactly the connections they cut before."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from bastion.api.security.protocol import guarded_protocol

KEEP_ALIVE = 1.5
HEADER_TIMEOUT = 1.0
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


async def _app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> float | None:
    """Seconds until the server closed the connection, or None if it stayed open."""
    t0 = time.monotonic()
    try:
        data = await asyncio.wait_for(reader.read(1), seconds)
    except TimeoutError:
        return None
    except ConnectionError:
        data = b""
    assert data == b"", data
    return time.monotonic() - t0


async def _scenario() -> None:
    proto = guarded_protocol(HEADER_TIMEOUT, 8)
    limits = proto.bastion_limits  # type: ignore[attr-defined]
    config = uvicorn.Config(_app, timeout_keep_alive=KEEP_ALIVE,  # type: ignore[arg-type]
                            lifespan="off", log_level="warning")
    config.load()
    state = ServerState()
    server = await asyncio.get_running_loop().create_server(
        lambda: proto(config=config, server_state=state, app_state={}), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        # requests spaced below the keep-alive timeout, for longer than it in all: the clock
        # counts from the last response, so the connection stays open
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2 * KEEP_ALIVE:
            writer.write(REQUEST)
            head = await asyncio.wait_for(reader.readuntil(b"ok"), 10)
            assert head.startswith(b"HTTP/1.1 200"), head
            await asyncio.sleep(KEEP_ALIVE / 4)
        assert not limits.pending, limits.pending
        # then idle: cut once the keep-alive timeout has passed, not before
        took = await _closed_within(reader, KEEP_ALIVE + 10)
        assert took is not None and took >= KEEP_ALIVE * 0.7, took
        writer.close()

        # a kept-alive connection that starts a request and never finishes its headers is cut
        # by the header timeout, counted from that request's first byte
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(REQUEST)
        await asyncio.wait_for(reader.readuntil(b"ok"), 10)
        await asyncio.sleep(HEADER_TIMEOUT / 2)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        took = await _closed_within(reader, HEADER_TIMEOUT + 10)
        assert took is not None and took >= HEADER_TIMEOUT * 0.7, took
        assert limits.timed_out == 1
        assert not limits.pending, limits.pending
        writer.close()
    finally:
        server.close()


def test_keep_alive_and_header_timeouts_still_cut_idle_and_slow_connections() -> None:
    asyncio.run(_scenario())
