"""Misbehaving clients for the hostile-client suite and the WebSocket flood benchmark.

``RawWs`` speaks just enough WebSocket over a plain socket to do what well-behaved libraries
refuse to: a tiny receive buffer and never reading, arbitrary frames, half-open sockets.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from typing import Any

from bastion.api.security.auth import sign


class RawWs:
    """A blocking WebSocket client on a raw socket (loopback tests only)."""

    def __init__(self, host: str, port: int, path: str = "/v1/ws", rcvbuf: int | None = None,
                 timeout: float = 5.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # before connect: a small window, so the server's sends back up quickly
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket"
                           f"\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])

    def send_text(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        mask = b"\0\0\0\0"  # a zero key leaves the payload as is: no per-byte work here
        n = len(data)
        if n < 126:
            header = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        self.sock.sendall(header + mask + data)

    def send_json(self, obj: Any) -> None:
        self.send_text(json.dumps(obj))

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame (server frames are not masked)."""
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8))[0]
        return b0 & 0x0F, self._read(n)

    def wait_close(self, timeout: float = 10.0) -> tuple[int, str] | None:
        """Read until a close frame: (code, reason); None if the socket ended without one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                op, payload = self.recv_frame()
            except (ConnectionError, OSError):
                return None
            if op == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                return code, payload[2:].decode(errors="replace")
        raise TimeoutError("no close frame in time")

    def close(self) -> None:
        self.sock.close()


def slow_headers(host: str, port: int, n: int) -> list[socket.socket]:
    """``n`` sockets that each sent the start of a request and nothing more (slowloris)."""
    out = []
    for _ in range(n):
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(b"GET /v1/time HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        out.append(s)
    return out


def is_closed(sock: socket.socket, wait: float) -> bool:
    """True if the server closed or reset ``sock`` within ``wait`` seconds."""
    sock.settimeout(wait)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    except OSError:
        return True


def reply(ws: RawWs, rid: int, limit: int = 500) -> dict[str, Any]:
    """The native WebSocket's reply to request ``rid`` (other frames skipped)."""
    for _ in range(limit):
        op, payload = ws.recv_frame()
        if op == 0x1:
            msg: dict[str, Any] = json.loads(payload)
            if msg.get("id") == rid:
                return msg
    raise AssertionError(f"no reply to {rid}")


def ws_auth(ws: RawWs, key: str, secret: str, rid: int = 1) -> dict[str, Any]:
    ts = str(time.time_ns() // 1_000_000)
    ws.send_json({"op": "auth", "id": rid, "key": key, "timestamp": ts,
                  "signature": sign(secret, f"{ts}GET/v1/ws")})
    return reply(ws, rid)
