"""Unmodified Binance client libraries with only their endpoint URLs pointed at our server.

Each helper makes a subclass whose URL class attributes name the test server; nothing else
of the client changes, so every call below runs the library's own request and parsing code.
The Binance hosts map to paths: ``api.binance.com/api`` -> ``/api``,
``fapi.binance.com/fapi`` -> ``/fapi``, ``stream.binance.com:9443/`` -> ``/``,
``fstream.binance.com/`` -> ``/fstream/``, ``ws-api.binance.com/ws-api/v3`` -> ``/ws-api/v3``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from websockets.sync.client import ClientConnection, connect


def ws_base(base: str) -> str:
    return base.replace("http://", "ws://", 1)


def python_binance_urls(base: str) -> dict[str, str]:
    ws = ws_base(base)
    return {"API_URL": base + "/api", "MARGIN_API_URL": base + "/sapi",
            "FUTURES_URL": base + "/fapi", "FUTURES_DATA_URL": base + "/futures/data",
            "FUTURES_COIN_URL": base + "/dapi", "WS_API_URL": ws + "/ws-api/v3",
            "WS_FUTURES_URL": ws + "/ws-fapi/v1"}


def pointed(cls: type, urls: dict[str, str]) -> Any:
    """A subclass of ``cls`` whose URL attributes are ``urls``."""
    return type("Bastion" + cls.__name__, (cls,), dict(urls))


def socket_manager_urls(base: str) -> dict[str, str]:
    ws = ws_base(base)
    return {"STREAM_URL": ws + "/", "FSTREAM_URL": ws + "/fstream/",
            "DSTREAM_URL": ws + "/dstream/"}


class Stream:
    """A raw Binance stream connection for the tests' own frames (websockets, sync)."""

    def __init__(self, url: str) -> None:
        self.ws: ClientConnection = connect(url, open_timeout=10, max_size=2**22).__enter__()

    def send(self, obj: Any) -> None:
        self.ws.send(obj if isinstance(obj, str | bytes) else json.dumps(obj))

    def recv(self, timeout: float = 5.0) -> Any:
        return json.loads(self.ws.recv(timeout=timeout))

    def until(self, pred: Callable[[Any], bool], timeout: float = 10.0) -> Any:
        """The first message matching ``pred`` (others are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching stream message")
            msg = self.recv(left)
            if pred(msg):
                return msg

    def request(self, obj: dict[str, Any], timeout: float = 5.0) -> Any:
        """Send a frame and return the reply carrying its ``id``."""
        self.send(obj)
        return self.until(lambda m: isinstance(m, dict) and m.get("id") == obj.get("id")
                          and ("result" in m or "code" in m or "error" in m), timeout)

    def close(self) -> None:
        self.ws.close()


async def next_event(sock: Any, pred: Callable[[Any], bool], timeout: float = 10.0) -> Any:
    """Read a python-binance socket until ``pred`` matches."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no matching event")
        msg = await asyncio.wait_for(sock.recv(), left)
        if pred(msg):
            return msg
