"""Async HTTP clients of a running deployment: a signed trading client (the native API, as any
user's bot would call it) and an operator client (``Authorization: Bearer``).

They speak only the public wire protocol, so drills and the demo traffic exercise exactly what
users and operators do; nothing here reaches into the server's memory.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

import httpx

from bastion.api.security.auth import sign

#: one request never waits longer than this (a dead server must not stall a bot forever)
TIMEOUT_S = 5.0


class ApiReply:
    """Status and decoded body of one request (``status`` 0: no answer at all)."""

    __slots__ = ("status", "body", "seconds")

    def __init__(self, status: int, body: Any, seconds: float) -> None:
        self.status = status
        self.body = body
        self.seconds = seconds

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def code(self) -> str:
        """The stable error code, ``TRANSPORT`` when the server did not answer."""
        if self.status == 0:
            return "TRANSPORT"
        if isinstance(self.body, dict):
            return str(self.body.get("code", ""))
        return ""

    def __repr__(self) -> str:
        return f"ApiReply({self.status}, {self.body!r})"


async def _send(http: httpx.AsyncClient, method: str, path: str, content: bytes | None,
                headers: dict[str, str]) -> ApiReply:
    t0 = time.perf_counter()
    try:
        r = await http.request(method, path, content=content, headers=headers)
    except httpx.HTTPError as exc:
        return ApiReply(0, {"code": "TRANSPORT", "message": str(exc)}, time.perf_counter() - t0)
    try:
        body = r.json() if r.content else None
    except ValueError:
        body = {"code": "BAD_BODY", "message": r.text[:200]}
    return ApiReply(r.status_code, body, time.perf_counter() - t0)


class TradingClient:
    """Native API with an HMAC-signed key: ``ts + METHOD + path[?query] + body``."""

    def __init__(self, base: str, key: str, secret: str) -> None:
        self.key = key
        self.secret = secret
        self.http = httpx.AsyncClient(base_url=base, timeout=TIMEOUT_S)

    async def close(self) -> None:
        await self.http.aclose()

    async def request(self, method: str, path: str, body: Any = None,
                      params: dict[str, Any] | None = None) -> ApiReply:
        if params:
            path = path + "?" + urlencode(params)
        raw = b"" if body is None else json.dumps(body).encode()
        stamp = str(time.time_ns() // 1_000_000)
        headers = {"X-BX-APIKEY": self.key, "X-BX-TIMESTAMP": stamp,
                   "X-BX-SIGNATURE": sign(self.secret, stamp.encode() + method.encode()
                                          + path.encode() + raw)}
        if raw:
            headers["content-type"] = "application/json"
        return await _send(self.http, method, path, raw or None, headers)

    async def public(self, path: str) -> ApiReply:
        return await _send(self.http, "GET", path, None, {})

    async def place(self, **order: Any) -> ApiReply:
        return await self.request("POST", "/v1/orders", order)

    async def cancel(self, order_id: int) -> ApiReply:
        return await self.request("DELETE", f"/v1/orders/{order_id}")

    async def cancel_all(self, market: str) -> ApiReply:
        return await self.request("DELETE", "/v1/orders", params={"market": market})


class OperatorClient:
    """Operator routes (``/admin``) with the bearer token; never a trading key."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.http = httpx.AsyncClient(base_url=base, timeout=30.0,
                                      headers={"authorization": f"Bearer {token}"})

    async def close(self) -> None:
        await self.http.aclose()

    async def call(self, method: str, path: str, body: Any = None) -> ApiReply:
        raw = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if raw else {}
        return await _send(self.http, method, path, raw, headers)

    async def must(self, method: str, path: str, body: Any = None) -> Any:
        """Like ``call`` but an error reply raises ``OperatorError`` with its code."""
        reply = await self.call(method, path, body)
        if not reply.ok:
            raise OperatorError(reply.code or str(reply.status), f"{method} {path}: {reply.body}")
        return reply.body

    async def new_trader(self, account: int, funds: dict[str, str]) -> TradingClient:
        """Fund ``account`` (journaled deposits) and give it a fresh read+trade key."""
        for asset, amount in funds.items():
            await self.must("POST", "/admin/deposits", {"account": account, "asset": asset,
                                                        "amount": amount, "reason": "drill"})
        key = await self.must("POST", "/admin/keys", {"account": account,
                                                      "permissions": ["read", "trade"]})
        return TradingClient(self.base, key["key"], key["secret"])


class OperatorError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
