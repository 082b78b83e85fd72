"""CPU per WebSocket order in the transport layer alone: frames in, one reply each out.

    python bench/ws_transport.py [--orders 50000] [--rounds 3] [--read-size 1]

In process, on a real event loop, with uvicorn's sans-I/O protocol under the app, and only the
socket replaced by a stand-in that counts writes (so no kernel time is measured: the real
saving of fewer writes is larger). Compares uvicorn's protocol with one ASGI ``send`` per reply
(what ``Conn.writer`` did before) against ``BoundedWebSocketProtocol`` (8 KiB parsed per loop
turn) with the replies queued by the time the writer runs sent by ``send_texts`` in one write,
and against the attached path the endpoint uses since the 7th session: each message handed to
the endpoint's handler in the read callback (simple frames parsed by ``api.ws.frames``), the
replies of a loop turn flushed by a callback. ``--read-size`` sets the orders per socket read
(default: 64 KiB of them, a pipelining client; 1 is what each connection sees at the half rate).
The gateway benchmark's CPU per order swings +-25% between rounds on the shared machine; this
isolates the layer ``api/ws`` owns.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import struct
import sys
import time
from types import SimpleNamespace
from typing import Any

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from bastion.api.ws.endpoint import Conn
from bastion.api.ws.protocol import BoundedWebSocketProtocol

ORDER = (b'{"op":"place","id":%d,"args":{"market":"BTC-USDT","side":"buy","quantity":"0.001",'
         b'"price":"40000.5","type":"limit"}}')
REPLY = (b'{"id":%d,"ok":true,"result":{"order_id":123456,"market":"BTC-USDT","side":"buy",'
         b'"status":"open","price":"40000.5","quantity":"0.001","filled":"0"}}')


def masked(data: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    n = len(data)
    head = struct.pack("!BB", 0x81, 0x80 | n) if n < 126 else struct.pack("!BBH", 0x81, 0xFE, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


class Socket:
    """The transport under the protocol: counts writes, sends nothing."""

    def __init__(self) -> None:
        self.reading = True
        self.writes = 0

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        self.reading = False

    def write(self, data: bytes) -> None:
        self.writes += 1

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default)


def one(cls: type[WebSocketsSansIOProtocol], mode: str, n: int,
        per_read: int) -> tuple[float, int]:
    """(CPU seconds per order, socket writes) for ``n`` orders fed ``per_read`` per read (0:
    64 KiB per read). ``mode``: ``asgi`` (a ``send`` per reply), ``batched`` (``send_texts``),
    ``attached`` (handler in the read callback, replies flushed per loop turn)."""
    async def main() -> tuple[float, int]:
        done = asyncio.Event()
        box: list[Any] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            proto = box[0]
            scope = {}
            if mode != "asgi":
                scope["bastion.send_texts"] = proto.send_texts
            if mode == "attached":
                scope["bastion.write_texts"] = proto.write_texts
            conn = Conn(SimpleNamespace(scope=scope, client=None, send=send), 1 << 30)  # type: ignore[arg-type]
            writer = asyncio.ensure_future(conn.writer())
            if mode == "attached":
                count = [0]

                def on_frame(_raw: str | bytes) -> float:
                    count[0] += 1
                    conn.send(REPLY % count[0])
                    return 0.0

                proto.attach(on_frame)
                while count[0] < n:
                    await asyncio.sleep(0)
            for got in range(1, n + 1 if mode != "attached" else 1):
                await receive()
                conn.send(REPLY % got)
                if not got % 32:
                    await asyncio.sleep(0)
            while conn.buffered:
                await asyncio.sleep(0)
            writer.cancel()
            done.set()

        config = uvicorn.Config(app, ws="websockets-sansio", ws_max_size=65536, lifespan="off",
                                ws_ping_interval=None, ws_per_message_deflate=False)
        config.load()
        proto = cls(config, ServerState(), {}, _loop=asyncio.get_running_loop())
        box.append(proto)
        sock = Socket()
        proto.connection_made(sock)  # type: ignore[arg-type]
        key = base64.b64encode(os.urandom(16)).decode()
        proto.data_received((f"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                             f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                             "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        await asyncio.sleep(0.01)
        frames = [masked(ORDER % i) for i in range(n)]
        if per_read:
            reads = [b"".join(frames[i:i + per_read]) for i in range(0, n, per_read)]
        else:
            data = b"".join(frames)
            reads = [data[i:i + 65536] for i in range(0, len(data), 65536)]
        writes0 = sock.writes
        t0 = time.process_time()
        for chunk in reads:
            while not sock.reading:
                await asyncio.sleep(0)
            proto.data_received(chunk)
            await asyncio.sleep(0)
        await done.wait()
        return (time.process_time() - t0) / n, sock.writes - writes0

    return asyncio.run(main())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--read-size", type=int, default=0,
                    help="orders per socket read (0: 64 KiB of them)")
    args = ap.parse_args()
    import logging

    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    builds: list[tuple[str, type[WebSocketsSansIOProtocol], str]] = [
        ("uvicorn, one send per reply", WebSocketsSansIOProtocol, "asgi"),
        ("bounded, batched writes", BoundedWebSocketProtocol, "batched"),
        ("attached, flushed per turn", BoundedWebSocketProtocol, "attached")]
    runs: dict[str, list[float]] = {name: [] for name, _, _ in builds}
    for r in range(args.rounds):
        for name, cls, mode in builds:
            cpu, writes = one(cls, mode, args.orders, args.read_size)
            runs[name].append(cpu * 1e6)
            print(f"round {r + 1}  {name:28} {cpu * 1e6:6.2f} us/order  {writes} socket writes "
                  f"for {args.orders} replies")
    base, batched, attached = (min(v) for v in runs.values())
    print(f"best: {base:.2f} -> {batched:.2f} ({batched / base:.2f}x) -> {attached:.2f} us/order "
          f"({attached / base:.2f}x; {attached / batched:.2f}x batched), load average "
          f"{os.getloadavg()[0]:.1f}")
    print(json.dumps({"bench": "ws_transport", "python": sys.version.split()[0],
                      "read_size": args.read_size, "us_per_order": runs,
                      "ratio_best": round(batched / base, 3),
                      "attached_vs_batched": round(attached / batched, 3)}))


if __name__ == "__main__":
    main()
