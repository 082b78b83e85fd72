"""The order-entry hot paths as bare ASGI handlers: native ``POST /v1/orders`` and the
Binance ``POST /api/v3/order`` (spot) and ``POST /fapi/v1/order`` (USD-M).

Same checks, same codes and the same bodies as the routed handlers (they share the parsing,
authentication and rendering functions, and ``Gateway.place``); these only skip the framework
layers (middleware stack, router, Request objects), which cost about as much as the order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from starlette.types import Receive, Scope, Send

from bastion.api import errors as A
from bastion.api.app_context import Context
from bastion.api.binance import rest as B
from bastion.api.errors import ApiError
from bastion.api.http import authenticate_scope, decode, encode, error_body
from bastion.api.native import schemas as S
from bastion.api.native import views as V
from bastion.api.native.routes import place_command

log = logging.getLogger("bastion.api")

_JSON = (b"content-type", b"application/json")

#: Binance order-entry paths served here -> whether the surface is USD-M (perpetuals)
BINANCE_ORDER_PATHS = {"/api/v3/order": False, "/fapi/v1/order": True}


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ApiError(A.MALFORMED_REQUEST, "client disconnected")
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(A.BODY_TOO_LARGE, f"request body over {limit} bytes")
        chunks.append(chunk)
        if not msg.get("more_body", False):
            return b"".join(chunks)


async def respond(send: Send, status: int, body: bytes,
                  extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [_JSON, (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def native_auth_headers(headers: Iterable[tuple[bytes, bytes]]
                        ) -> tuple[str | None, str | None, str | None, str | None]:
    """The native signature headers of a raw ASGI header list, in one pass: key id,
    timestamp, signature, receive window (None where absent)."""
    key_id = ts = sig = window = None
    for name, value in headers:
        if name == b"x-bx-apikey":
            key_id = value.decode("latin-1")
        elif name == b"x-bx-timestamp":
            ts = value.decode("latin-1")
        elif name == b"x-bx-signature":
            sig = value.decode("latin-1")
        elif name == b"x-bx-recv-window":
            window = value.decode("latin-1")
    return key_id, ts, sig, window


def binance_api_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The ``X-MBX-APIKEY`` header of a raw ASGI header list."""
    for name, value in headers:
        if name == b"x-mbx-apikey":
            return value.decode("latin-1")
    return None


#: what a bare handler answers: status, JSON body, extra headers (content-type and length
#: are added by whoever writes it)
Reply = tuple[int, bytes, list[tuple[bytes, bytes]]]


def native_error(err: ApiError) -> Reply:
    return err.status, error_body(err), [(k.lower().encode(), v.encode())
                                         for k, v in err.headers.items()]


def binance_error(err: ApiError | B.BinanceError) -> Reply:
    out = B.error_response(err)
    return out.status_code, bytes(out.body), [
        (k.encode("latin-1"), v.encode("latin-1")) for k, v in out.headers.items()
        if k != "content-type" and k != "content-length"]


async def native_place(ctx: Context, scope: Scope, body: bytes) -> Reply:
    """Native ``POST /v1/orders`` once its body is read: never raises."""
    try:
        key_id, ts, sig, window = native_auth_headers(scope["headers"])
        key = authenticate_scope(ctx, scope, key_id, ts, sig, window, body, "trade")
        req = decode(body, S.PlaceOrder)
        gw = ctx.gateway
        cmd = place_command(gw.engine, key.account, req)
        rec, dup, _ = await gw.place(cmd)
        return (200 if dup else 201,
                encode(V.order(V.units(gw.engine, rec.market), rec, dup)), [])
    except ApiError as err:
        return native_error(err)
    except Exception:
        log.exception("order entry failed")
        return 500, error_body(ApiError("INTERNAL_ERROR", "internal error")), []


async def binance_place(ctx: Context, scope: Scope, body: bytes, perp: bool) -> Reply:
    """Binance ``POST /api/v3/order`` / ``/fapi/v1/order`` once its body is read: never
    raises."""
    try:
        try:
            qs: bytes = scope.get("query_string", b"")
            p = B.parse_params(qs, body)
            api_key = binance_api_key(scope["headers"])
            key = B.verify(ctx, api_key, "POST", scope["path"], qs, body, p, "trade",
                           scope.get("client"))
            gw = ctx.gateway
            m, u, cmd = B.order_command(gw, key, p, perp)
            placed = await gw.place(cmd)  # ``B.place`` inline: one coroutine less per order
            return 200, B.encode(B.order_json(u, m, placed.order, perp,
                                              None if perp else placed.trades(),
                                              engine=gw.engine)), []
        except (ApiError, B.BinanceError) as err:
            return binance_error(err)
    except Exception:
        log.exception("Binance order entry failed")
        code, msg, _ = B.binance_error(ApiError("INTERNAL_ERROR", "internal error"))
        return 500, bytes(B.J({"code": code, "msg": msg}).body), []


async def place_order(ctx: Context, scope: Scope, receive: Receive, send: Send) -> None:
    try:
        body = await read_body(receive, ctx.settings.max_body)
    except ApiError as err:
        await respond(send, *native_error(err))
        return
    await respond(send, *await native_place(ctx, scope, body))


async def place_binance(ctx: Context, scope: Scope, receive: Receive, send: Send,
                        perp: bool) -> None:
    try:
        body = await read_body(receive, ctx.settings.max_body)
    except ApiError as err:
        await respond(send, *binance_error(err))
        return
    await respond(send, *await binance_place(ctx, scope, body, perp))
