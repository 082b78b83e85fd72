"""Small HTTP helpers shared by the native and operator routes: JSON in/out, signed-request
authentication, query parameters. Kept free of routing so each route module stays short."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from bastion.api import errors as A
from bastion.api.app_context import Context
from bastion.api.errors import ApiError
from bastion.api.security.auth import read_of, require
from bastion.api.security.keys import ApiKey
from bastion.core import errors as X
from bastion.textnum import ascii_int

T = TypeVar("T")

_enc = msgspec.json.Encoder()
_decoders: dict[type, msgspec.json.Decoder[Any]] = {}

#: a validation error at one of these fields reports the core's code for it
_FIELD_CODES = {"price": X.INVALID_PRICE, "quantity": X.INVALID_QUANTITY,
                "amount": X.INVALID_AMOUNT, "address": X.INVALID_ADDRESS}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _enc.encode(content)


def encode(obj: Any) -> bytes:
    return _enc.encode(obj)


def error_body(err: ApiError) -> bytes:
    """The native error body (``schemas.Error``): code, message and the typed detail."""
    detail = err.detail()
    if not detail:
        return _enc.encode({"code": err.code, "message": err.message})
    return _enc.encode({"code": err.code, "message": err.message, **detail})


def decode(body: bytes | msgspec.Raw, kind: type[T]) -> T:
    """Decode and validate a JSON body; errors name the offending field."""
    dec = _decoders.get(kind)
    if dec is None:
        dec = _decoders[kind] = msgspec.json.Decoder(kind)
    if not body:
        raise ApiError(A.MALFORMED_REQUEST, "a JSON request body is required")
    try:
        result: T = dec.decode(body)
        return result
    except msgspec.ValidationError as exc:
        text = str(exc)
        code = A.MALFORMED_REQUEST
        for name, field_code in _FIELD_CODES.items():
            if text.endswith(f"`$.{name}`"):
                code = field_code
        raise ApiError(code, f"invalid request: {text}") from None
    except msgspec.DecodeError as exc:
        raise ApiError(A.MALFORMED_REQUEST, f"malformed JSON: {exc}") from None
    except RecursionError:
        raise ApiError(A.MALFORMED_REQUEST, "malformed JSON: nested too deeply") from None


def authenticate(ctx: Context, request: Request, body: bytes, permission: str) -> ApiKey:
    """Verify the native signature over timestamp + METHOD + path[?query] + body, then the
    key's permission and its rate limit."""
    h = request.headers
    return authenticate_scope(ctx, request.scope, h.get("x-bx-apikey"),
                              h.get("x-bx-timestamp"), h.get("x-bx-signature"),
                              h.get("x-bx-recv-window"), body, permission)


def authenticate_scope(ctx: Context, scope: Any, key_id: str | None, ts: str | None,
                       signature: str | None, recv_window: str | None, body: bytes,
                       permission: str) -> ApiKey:
    path: bytes = scope.get("raw_path") or scope["path"].encode()
    qs: bytes = scope.get("query_string", b"")
    payload = b"".join(((ts or "").encode(), scope["method"].encode(), path,
                        b"?" + qs if qs else b"", body))
    key = ctx.auth.verify(key_id, ts, signature, payload, recv_window,
                          read=read_of(scope["method"], scope["path"]))
    require(key, permission)
    ctx.key_limiter.hit(key.key)
    return key


def admin(ctx: Context, request: Request) -> None:
    ctx.auth.check_admin(request.headers.get("authorization"))


def int_param(request: Request, name: str, default: int | None, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        if default is None:
            raise ApiError(A.MALFORMED_REQUEST, f"query parameter {name!r} is required")
        return default
    value = ascii_int(raw, signed=low < 0)
    if value is None:
        raise ApiError(A.MALFORMED_REQUEST, f"{name} must be an integer in ASCII digits")
    if not low <= value <= high:
        raise ApiError(A.MALFORMED_REQUEST, f"{name} must be in {low}..{high}")
    return value


def path_int(request: Request, name: str) -> int:
    raw = request.path_params.get(name, "")
    value = ascii_int(raw, max_digits=18)
    if value is None:
        raise ApiError(X.UNKNOWN_ORDER if name == "order_id" else A.MALFORMED_REQUEST,
                       f"{name} must be a positive integer")
    return value


Handler = Callable[[Request], Awaitable[Response]]


class Handlers(dict[str, Handler]):
    """One module's HTTP handlers by name (``"native.amend"``); the route table
    (``bastion.api.routes``) says which method and path each one serves, so no module keeps a
    route list of its own."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def __call__(self, fn: Handler) -> Handler:
        """Register ``fn`` under its own name (a decorator)."""
        return self.add(fn.__name__, fn)

    def add(self, name: str, fn: Handler) -> Handler:
        full = f"{self.prefix}.{name}"
        if full in self:
            raise ValueError(f"handler {full} registered twice")
        self[full] = fn
        return fn
