"""Binance WebSocket endpoints: market and user-data streams, the WebSocket API's user-data
subscription, and the REST listenKey routes.

Where Binance puts them, with the host replaced (``wss://stream.binance.com:9443/`` becomes
``ws://HOST/`` or ``ws://HOST/stream/``, ``wss://fstream.binance.com/`` becomes
``ws://HOST/fstream/``, ``wss://ws-api.binance.com/ws-api/v3`` becomes ``ws://HOST/ws-api/v3``):

- spot streams: ``/ws/<stream>[/<stream>...]``, ``/stream?streams=a/b``, and the same under
  ``/stream/``; a spot listenKey is a stream name;
- USD-M streams: ``/fstream/[public|market|private/]ws/<stream>``, ``.../stream?streams=``,
  ``/fstream/private/ws?listenKey=K``;
- ``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` / ``SET_PROPERTY`` /
  ``GET_PROPERTY`` frames, answered ``{"result": ..., "id": N}`` or Binance's error shape
  ``{"code": 2, "msg": "Invalid request: ...", "id": N}``; a bad frame never closes the socket;
- ``/ws-api/v3``: ``ping``, ``time``, ``userDataStream.subscribe.signature`` and
  ``userDataStream.unsubscribe`` (what python-binance and ccxt use for spot user data).

Every connection is a native WebSocket ``Conn`` (one writer, a bounded send queue, slow
consumers dropped), so these streams live under the same limits as ``/v1/ws``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from bastion.api import errors as A
from bastion.api.app_context import Context
from bastion.api.binance.listenkeys import ListenKey, ListenKeyError, ListenKeys, Surface
from bastion.api.binance.rest import BinanceError, J, binance_error, error_response, rate_limits
from bastion.api.binance.streams import FUTURES, SPOT, Spec, StreamError, StreamHub, parse
from bastion.api.binance.user import Sink, UserStreams
from bastion.api.errors import ApiError
from bastion.api.security.auth import require, wall_ms
from bastion.api.security.keys import ApiKey
from bastion.api.security.ratelimit import Limiter
from bastion.api.ws.endpoint import POLICY, Conn

log = logging.getLogger("bastion.api.binance")

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder()

#: a name without ``@`` this long is taken for a listenKey
LISTEN_KEY_MIN = 32
FUTURES_CATEGORIES = ("public", "market", "private")
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")


class StreamConn(Conn):
    """A Binance stream connection: the native connection plus its streams and sinks."""

    __slots__ = ("combined", "names", "next_sub", "sinks", "surface")

    def __init__(self, ws: WebSocket, limit: int, surface: str, combined: bool) -> None:
        super().__init__(ws, limit)
        self.surface = surface
        self.combined = combined
        #: stream name -> its spec (market streams) or None (a listenKey stream)
        self.names: dict[str, Spec | None] = {}
        #: listenKey or ``#<subscriptionId>`` -> user-data sink
        self.sinks: dict[str, Sink] = {}
        self.next_sub = 0


def _frame_error(code: int, msg: str, rid: Any = None) -> bytes:
    return _enc.encode({"code": code, "msg": msg, "id": rid})


def _valid_id(rid: Any) -> bool:
    if rid is None:
        return True
    if type(rid) is int:
        return -(2**63) <= rid < 2**63
    return isinstance(rid, str) and 0 < len(rid) <= 36 and rid.isascii() \
        and rid.replace("-", "").replace("_", "").isalnum()


def surface_of(conn: StreamConn) -> Surface:
    """A connection's surface as listen keys type it."""
    return "futures" if conn.surface == "futures" else "spot"


class BinanceWs:
    """Market streams, user-data sinks and listen keys, wired to the gateway's fan-out."""

    def __init__(self, ctx: Context, listen_keys: ListenKeys | None = None) -> None:
        self.ctx = ctx
        self.streams = StreamHub(ctx)
        self.users = UserStreams(ctx)
        self.listen_keys = listen_keys if listen_keys is not None else ListenKeys()
        self.listen_keys.on_close(self._listen_key_closed)
        #: the native WebSocket's cap on subscriptions per connection, for streams too
        self.max_streams = ctx.settings.ws_max_channels
        #: the native WebSocket's frame budget (``BASTION_WS_MSG_RATE``): over it a socket is
        #: not read until the budget refills
        self.frames = Limiter("per-WebSocket frame", *ctx.settings.ws_msg_rate)
        ctx.keys.watch(self._key_changed)
        self._sweeper: asyncio.Task[None] | None = None

    def attach(self) -> None:
        self.ctx.gateway.add_listener(self.streams.publish)
        self.ctx.gateway.add_listener(self.users.publish)

    def start(self) -> None:
        self.streams.start()
        self._sweeper = asyncio.create_task(self._sweep())

    async def stop(self) -> None:
        await self.streams.stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.listen_keys.sweep()

    def _key_changed(self, key_id: str, new: ApiKey | None) -> None:
        """A revoked key (or one that lost ``read``) ends its user-data streams at once."""
        if new is None or "read" not in new.permissions:
            self.revoke(key_id)
        else:
            for sink in self.users.of_api_key(key_id):
                if sink.account != new.account:
                    self.revoke(key_id)
                    return

    def revoke(self, api_key: str) -> None:
        """The API key was revoked: its listen keys end and so do its WebSocket API
        subscriptions (``eventStreamTerminated``)."""
        self.listen_keys.revoke(api_key)
        for sink in self.users.of_api_key(api_key):
            if sink.subscription_id is not None:
                sink.send(_enc.encode({"e": "eventStreamTerminated", "E": wall_ms()}))
                self._drop_sink(sink.conn, sink)

    def _listen_key_closed(self, lk: ListenKey) -> None:
        for sink in [s for s in self.users.sinks.get(lk.account, ())
                     if s.listen_key == lk.listen_key]:
            self.users.expired(sink, wall_ms())
            conn = sink.conn
            self._drop_sink(conn, sink)
            conn.names.pop(lk.listen_key, None)

    def _drop_sink(self, conn: StreamConn, sink: Sink) -> None:
        self.users.remove(sink)
        for name, s in list(conn.sinks.items()):
            if s is sink:
                del conn.sinks[name]

    # ------------------------------------------------------------------ stream frames

    def subscribe(self, conn: StreamConn, names: list[Any]) -> None:
        """Validate every name first, then subscribe all of them (all or nothing)."""
        markets = self.streams.markets(conn.surface)
        specs: list[tuple[str, Spec | None]] = []
        for name in names:
            if not isinstance(name, str):
                raise StreamError("Invalid request: stream names must be strings")
            if name in conn.names:
                continue
            specs.append((name, self._parse(conn, name, markets)))
        cap = self.max_streams
        if len(conn.names) + len(specs) > cap:
            raise StreamError(f"Invalid request: too many streams; a connection can listen "
                              f"to at most {cap} (BASTION_WS_MAX_CHANNELS)")
        for name, spec in specs:
            if spec is None:
                self._add_user(conn, name)
            else:
                conn.names[name] = spec
                self.streams.add(conn, spec)

    def _parse(self, conn: StreamConn, name: str, markets: dict[str, Any]) -> Spec | None:
        if "@" not in name and not name.startswith("!") and len(name) >= LISTEN_KEY_MIN:
            if self.listen_keys.live(name, surface_of(conn)) is None:
                raise StreamError(f"Invalid request: listenKey {name[:8]}... does not exist "
                                  "or has expired", code=-1125)
            return None
        return parse(name, conn.surface, markets)

    def _add_user(self, conn: StreamConn, listen_key: str) -> None:
        lk = self.listen_keys.live(listen_key, surface_of(conn))
        if lk is None:  # pragma: no cover - checked in _parse
            return
        sink = Sink(conn, lk.account, lk.api_key, conn.surface, listen_key=listen_key)
        conn.names[listen_key] = None
        conn.sinks[listen_key] = sink
        self.users.add(sink)

    def unsubscribe(self, conn: StreamConn, names: list[Any]) -> None:
        for name in names:
            if not isinstance(name, str) or name not in conn.names:
                continue
            spec = conn.names.pop(name)
            if spec is not None:
                self.streams.remove(conn, spec)
            else:
                sink = conn.sinks.get(name)
                if sink is not None:
                    self._drop_sink(conn, sink)

    def drop(self, conn: StreamConn) -> None:
        self.unsubscribe(conn, list(conn.names))
        for sink in list(conn.sinks.values()):
            self._drop_sink(conn, sink)

    def handle(self, conn: StreamConn, raw: str | bytes) -> None:
        """One client frame on a stream connection; every outcome is answered, none closes
        the connection."""
        try:
            msg = _dec.decode(raw)
        except (msgspec.DecodeError, RecursionError) as exc:
            conn.send(_frame_error(3, f"Invalid JSON: {str(exc)[:200]}"))
            return
        if not isinstance(msg, dict):
            conn.send(_frame_error(2, "Invalid request: expected a JSON object"))
            return
        rid = msg.get("id")
        if not _valid_id(rid):
            conn.send(_frame_error(2, "Invalid request: request ID must be an unsigned "
                                      "integer"))
            return
        method = msg.get("method")
        params = msg.get("params", [])
        try:
            self.ctx.ip_limiter.hit(conn.ip)
            if method is None:
                raise StreamError("Invalid request: missing field `method`")
            if method not in METHODS:
                raise StreamError(f"Invalid request: unknown variant {str(method)[:40]!r}, "
                                  "expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, "
                                  "`LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`")
            if not isinstance(params, list):
                raise StreamError("Invalid request: params must be an array")
            if len(params) > self.max_streams:
                raise StreamError("Invalid request: too many parameters")
            result: Any = None
            if method == "SUBSCRIBE":
                self.subscribe(conn, params)
            elif method == "UNSUBSCRIBE":
                self.unsubscribe(conn, params)
            elif method == "LIST_SUBSCRIPTIONS":
                result = list(conn.names)
            else:
                if not params or not isinstance(params[0], str):
                    raise StreamError("Invalid request: property name must be a string")
                if params[0] != "combined":
                    raise StreamError("Unknown property", code=0)
                if method == "GET_PROPERTY":
                    result = conn.combined
                elif len(params) != 2 or not isinstance(params[1], bool):
                    raise StreamError("Invalid value type: expected Boolean", code=1)
                else:
                    conn.combined = params[1]
            conn.send(_enc.encode({"result": result, "id": rid}))
        except StreamError as err:
            conn.send(_frame_error(err.code, err.msg, rid))
        except ApiError as err:  # rate limit: Binance disconnects a flooding connection
            conn.send(_frame_error(2, f"Too many requests: {err.message}", rid))

    # ------------------------------------------------------------------ WebSocket API

    def ws_api(self, conn: StreamConn, raw: str | bytes) -> None:
        try:
            msg = _dec.decode(raw)
        except (msgspec.DecodeError, RecursionError) as exc:
            conn.send(_api_error(None, -1100, 400, f"Malformed request: {str(exc)[:200]}",
                                 self.api_rate_limits(conn)))
            return
        if not isinstance(msg, dict):
            conn.send(_api_error(None, -1100, 400, "Malformed request: expected an object",
                                 self.api_rate_limits(conn)))
            return
        rid = msg.get("id")
        if not _valid_id(rid):
            conn.send(_api_error(None, -1100, 400, "Invalid 'id' in JSON request.",
                                 self.api_rate_limits(conn)))
            return
        method = msg.get("method")
        params = msg.get("params", {})
        try:
            self.ctx.ip_limiter.hit(conn.ip)
            if not isinstance(params, dict):
                raise BinanceError(-1135, "Invalid 'params' in JSON request; expected an "
                                          "object.")
            result = self._api_call(conn, method, params)
            conn.send(_enc.encode({"id": rid, "status": 200, "result": result,
                                   "rateLimits": self.api_rate_limits(conn)}))
        except BinanceError as err:
            conn.send(_api_error(rid, err.code, err.status, err.msg, self.api_rate_limits(conn)))
        except ApiError as err:
            code, text, status = binance_error(err)
            conn.send(_api_error(rid, code, status, text, self.api_rate_limits(conn)))

    def api_rate_limits(self, conn: StreamConn) -> list[dict[str, Any]]:
        """The limits a WebSocket API request counts against, as ``exchangeInfo`` states them
        (each request takes 1 from its client IP's ``REQUEST_WEIGHT`` bucket), with ``count``:
        what that IP has taken from the bucket and not yet regained (0 while it stays under
        the rate; refused once it reaches the burst)."""
        limits = [dict(lim) for lim in rate_limits(self.ctx)
                  if lim["rateLimitType"] == "REQUEST_WEIGHT"]
        for lim in limits:
            lim["count"] = math.ceil(self.ctx.ip_limiter.used(conn.ip))
        return limits

    def _api_call(self, conn: StreamConn, method: Any, params: dict[str, Any]) -> Any:
        if method == "ping":
            return {}
        if method == "time":
            return {"serverTime": wall_ms()}
        if method == "userDataStream.subscribe.signature":
            fields = {k: v for k, v in params.items() if k != "signature"}
            payload = "&".join(f"{k}={_text(v)}" for k, v in sorted(fields.items()))
            key = self.ctx.auth.verify(_text(params.get("apiKey")) or None,
                                       _text(params.get("timestamp")) or None,
                                       _text(params.get("signature")) or None,
                                       payload.encode(),
                                       _text(params.get("recvWindow")) or None)
            require(key, "read")
            if len(conn.sinks) >= self.max_streams:
                raise BinanceError(-1015, "Too many subscriptions on this connection.")
            sub = conn.next_sub
            conn.next_sub += 1
            sink = Sink(conn, key.account, key.key, SPOT, subscription_id=sub)
            conn.sinks[f"#{sub}"] = sink
            self.users.add(sink)
            return {"subscriptionId": sub}
        if method == "userDataStream.unsubscribe":
            sub_id = params.get("subscriptionId")
            for name, sink in list(conn.sinks.items()):
                if sub_id is None or name == f"#{sub_id}":
                    self._drop_sink(conn, sink)
            return {}
        if method == "session.status":
            return {"apiKey": None, "authorizedSince": None, "connectedSince": None,
                    "returnRateLimits": True, "serverTime": wall_ms(),
                    "userDataStream": bool(conn.sinks)}
        raise BinanceError(-1100, f"Unsupported method {str(method)[:60]!r} on this server "
                                  "(supported: ping, time, userDataStream.subscribe.signature, "
                                  "userDataStream.unsubscribe, session.status).")

    # ------------------------------------------------------------------ routes

    def routes(self) -> list[BaseRoute]:
        out: list[BaseRoute] = []
        for prefix in ("", "/stream"):
            out += [WebSocketRoute(f"{prefix}/ws", self._endpoint(SPOT, False)),
                    WebSocketRoute(f"{prefix}/ws/{{names:path}}", self._endpoint(SPOT, False)),
                    WebSocketRoute(f"{prefix}/stream", self._endpoint(SPOT, True))]
        for cat in ("", *(c + "/" for c in FUTURES_CATEGORIES)):
            base = f"/fstream/{cat}"
            out += [WebSocketRoute(f"{base}ws", self._endpoint(FUTURES, False)),
                    WebSocketRoute(f"{base}ws/{{names:path}}", self._endpoint(FUTURES, False)),
                    WebSocketRoute(f"{base}stream", self._endpoint(FUTURES, True))]
        out.append(WebSocketRoute("/ws-api/v3", self._endpoint(SPOT, False, api=True)))
        out += listen_key_routes(self.ctx, self.listen_keys)
        return out

    def _endpoint(self, surface: str, combined: bool, api: bool = False) -> Any:
        async def endpoint(ws: WebSocket) -> None:
            hub = self.ctx.hub
            assert hub is not None
            ip = ws.client.host if ws.client else "?"
            if not hub.admit(ip):  # the native WebSocket's per-IP socket cap, shared
                await ws.accept()
                await ws.close(POLICY, f"too many WebSocket connections from your address "
                                       f"(max {self.ctx.settings.ws_per_ip})")
                return
            try:
                await self._serve(ws, surface, combined, api)
            finally:
                hub.release(ip)
        return endpoint

    async def _serve(self, ws: WebSocket, surface: str, combined: bool, api: bool) -> None:
        await ws.accept()
        conn = StreamConn(ws, self.ctx.settings.ws_send_buffer, surface, combined)
        writer = conn.writer_task = asyncio.create_task(conn.writer())
        who = str(id(conn))
        try:
            if not api:
                self._initial(conn, ws)
            handle = self.ws_api if api else self.handle
            while not conn.closed:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    break
                raw = msg.get("text")
                handle(conn, raw if raw is not None else (msg.get("bytes") or b""))
                # over budget this socket is not read until the debt is paid; otherwise a
                # client with frames buffered takes turns
                await asyncio.sleep(self.frames.pause(who))
        except Exception:
            log.exception("Binance stream connection from %s failed", conn.ip)
            conn.close(1011, "internal error")
        finally:
            self.frames.forget(who)
            self.drop(conn)
            if conn.closer is not None:
                with contextlib.suppress(BaseException):
                    await conn.closer
            conn.closed = True
            writer.cancel()
            with contextlib.suppress(BaseException):
                await writer

    def _initial(self, conn: StreamConn, ws: WebSocket) -> None:
        """Streams named in the URL (path or ``streams=`` / ``listenKey=`` query)."""
        # a path segment that cannot be a stream (ccxt opens ``/ws/0``, ``/ws/1`` to label
        # its connections) names nothing, as on Binance
        names = [n for n in str(ws.path_params.get("names", "")).split("/")
                 if "@" in n or n.startswith("!") or len(n) >= LISTEN_KEY_MIN]
        query = dict(parse_qsl(ws.scope.get("query_string", b"").decode("latin-1"),
                               max_num_fields=16))
        names += [n for n in query.get("streams", "").split("/") if n]
        if query.get("listenKey"):
            names.append(query["listenKey"])
        for name in names[:self.max_streams + 1]:  # each on its own: a bad one spoils no other
            try:
                self.subscribe(conn, [name])
            except StreamError as err:
                if err.code == -1125:
                    conn.send(_enc.encode({"e": "listenKeyExpired", "E": wall_ms(),
                                           "listenKey": name}))
                else:
                    conn.send(_frame_error(err.code, err.msg))


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _api_error(rid: Any, code: int, status: int, msg: str,
               limits: list[dict[str, Any]]) -> bytes:
    return _enc.encode({"id": rid, "status": status, "error": {"code": code, "msg": msg},
                        "rateLimits": limits})


# ---------------------------------------------------------------- REST: listen keys

def listen_key_routes(ctx: Context, keys: ListenKeys) -> list[BaseRoute]:
    """``POST/PUT/DELETE /api/v3/userDataStream`` and ``/fapi/v1/listenKey``: the API key
    header alone authenticates (Binance's USER_STREAM security), as the clients send it."""

    async def api_key(request: Request) -> tuple[Any, str | None]:
        body = await request.body() if request.method in ("POST", "PUT", "DELETE") else b""
        items: dict[str, str] = {}
        for raw in (request.scope.get("query_string", b""), body):
            if raw:
                try:
                    items.update(parse_qsl(raw.decode("utf-8"), max_num_fields=20))
                except (UnicodeDecodeError, ValueError):
                    raise BinanceError(-1100, "Illegal characters found in a parameter.") \
                        from None
        key_id = request.headers.get("x-mbx-apikey")
        if not key_id:
            raise ApiError(A.UNAUTHORIZED, "missing API key", field="key")
        key = ctx.keys.get(key_id)
        if key is None:
            raise ApiError(A.UNAUTHORIZED, "unknown API key")
        require(key, "read")
        ctx.key_limiter.hit(key.key)
        return key, items.get("listenKey") or None

    def handler(surface: str) -> Any:
        futures = surface == FUTURES

        async def handle(request: Request) -> Response:
            try:
                key, listen_key = await api_key(request)
                if request.method == "POST":
                    lk = keys.create(key.key, key.account, surface)  # type: ignore[arg-type]
                    return J({"listenKey": lk.listen_key})
                if listen_key is None and not futures:
                    raise BinanceError(-1102, "Mandatory parameter 'listenKey' was not sent, "
                                              "was empty/null, or malformed.")
                if request.method == "PUT":
                    lk = keys.keepalive(key.key, listen_key, surface)  # type: ignore[arg-type]
                    return J({"listenKey": lk.listen_key} if futures else {})
                keys.close(key.key, listen_key, surface)  # type: ignore[arg-type]
                return J({})
            except ListenKeyError as exc:
                return error_response(BinanceError(-1125, str(exc)))
            except (ApiError, BinanceError) as err:
                return error_response(err)
        return handle

    methods = ["POST", "PUT", "DELETE"]
    return [Route("/api/v3/userDataStream", handler(SPOT), methods=methods),
            Route("/fapi/v1/listenKey", handler(FUTURES), methods=methods)]
