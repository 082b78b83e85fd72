"""The order-entry hot path, ``POST /v1/orders``, as a bare ASGI handler.

Same checks, same codes and the same bodies as the routed handler in ``native`` (which stays
the reference and serves every other route); it only skips the framework layers (middleware
stack, router, Request objects), which cost about as much as the order itself.
"""

from __future__ import annotations

import logging

from starlette.types import Receive, Scope, Send

from bastion.api import errors as A
from bastion.api import schemas as S
from bastion.api import views as V
from bastion.api.app_context import Context
from bastion.api.errors import ApiError
from bastion.api.http import authenticate_scope, decode, encode, error_body
from bastion.api.native import place_command

log = logging.getLogger("bastion.api")

_JSON = (b"content-type", b"application/json")


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


async def place_order(ctx: Context, scope: Scope, receive: Receive, send: Send) -> None:
    try:
        body = await read_body(receive, ctx.settings.max_body)
        key_id = ts = sig = window = None
        for name, value in scope["headers"]:
            if name == b"x-bx-apikey":
                key_id = value.decode("latin-1")
            elif name == b"x-bx-timestamp":
                ts = value.decode("latin-1")
            elif name == b"x-bx-signature":
                sig = value.decode("latin-1")
            elif name == b"x-bx-recv-window":
                window = value.decode("latin-1")
        key = authenticate_scope(ctx, scope, key_id, ts, sig, window, body, "trade")
        req = decode(body, S.PlaceOrder)
        gw = ctx.gateway
        cmd = place_command(gw.engine, key.account, req)
        rec, dup, _ = await gw.place(cmd)
        out = encode(V.order(V.units(gw.engine, rec.market), rec, dup))
        await respond(send, 200 if dup else 201, out)
    except ApiError as err:
        await respond(send, err.status, error_body(err.code, err.message),
                      [(k.lower().encode(), v.encode()) for k, v in err.headers.items()])
    except Exception:
        log.exception("order entry failed")
        await respond(send, 500, error_body("INTERNAL_ERROR", "internal error"))
