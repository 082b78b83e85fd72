"""The ASGI application: native REST, WebSocket, Binance-compatible routes, operator routes,
status page, OpenAPI and docs, behind per-IP limits and a request size cap.

Starlette + msgspec was chosen by measurement (docs/trading-api.md); the hot path stays a
plain Starlette route so the framework adds little per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.api import docs as api_docs
from bastion.api import errors as A
from bastion.api import routes as route_table
from bastion.api import wallet
from bastion.api.app_context import Context
from bastion.api.binance import rest as binance
from bastion.api.binance import ws as binance_ws
from bastion.api.binance.listenkeys import ListenKeys
from bastion.api.config import Settings
from bastion.api.errors import ApiError
from bastion.api.health import Health
from bastion.api.http import encode, error_body, now_ms
from bastion.api.lifecycle import banner, close_node, ensure_demo_key, open_node
from bastion.api.metrics import Metrics
from bastion.api.metrics import route as metrics_route
from bastion.api.native import routes as native
from bastion.api.nodelike import SharingKeys
from bastion.api.openapi import build_spec
from bastion.api.operator import admin, ops
from bastion.api.read.checkpoint import Checkpoints, Restorer
from bastion.api.security.auth import Authenticator
from bastion.api.security.keys import KeyStore, load_server_key
from bastion.api.security.ratelimit import Limiter
from bastion.api.service.fastpath import (
    BINANCE_ORDER_PATHS,
    Reply,
    binance_error,
    binance_place,
    native_error,
    native_place,
    place_binance,
    place_order,
)
from bastion.api.service.gateway import Gateway
from bastion.api.ws import endpoint as ws
from bastion.textnum import ascii_int

log = logging.getLogger("bastion.api")

BINANCE_PREFIXES = ("/api/", "/fapi/", "/sapi/", "/dapi/", "/eapi/")


def _is_binance(path: str) -> bool:
    return path.startswith(BINANCE_PREFIXES)


def _error_response(path: str, err: ApiError) -> Response:
    if _is_binance(path):
        return binance.error_response(err)
    return Response(error_body(err), status_code=err.status,
                    media_type="application/json", headers=err.headers)


def _buffer_pin(transport: Any, option: int, size: int) -> Callable[[], None] | None:
    """A call that pins one of a WebSocket's kernel buffers to ``size`` bytes (None if off).

    Send buffer: left to autotuning it grows to megabytes for a client that stops reading, and
    the per-connection byte bound (``ws.Conn``) would only start counting after that; pinning
    it up front cost pipelined order entry CPU (measured), so ``ws.Conn`` pins it only once a
    connection falls behind. Receive buffer: the server parses all that one read returns in one
    go; a small buffer bounds that work per read."""
    sock = transport.get_extra_info("socket")
    if sock is None or size <= 0:
        return None

    def pin() -> None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, size)

    return pin


class Guard:
    """The outermost ASGI layer: per-IP rate limit and body-size cap before anything else (so
    abuse costs little), and the bare order-entry hot path (``fastpath``)."""

    def __init__(self, app: ASGIApp, limiter: Limiter, max_body: int,
                 fast: dict[str, Any], ws_sndbuf: int = 0, ws_rcvbuf: int = 0) -> None:
        self.app = app
        self.ws_sndbuf = ws_sndbuf
        self.ws_rcvbuf = ws_rcvbuf
        self.limiter = limiter
        self.max_body = max_body
        #: filled by the lifespan: the context for the bare order-entry handler
        self.fast = fast
        self._direct: dict[bytes, Callable[[Scope, bytes], Awaitable[Reply]]] = {}

    def direct_routes(self) -> dict[bytes, Callable[[Scope, bytes], Awaitable[Reply]]]:
        """The order-entry paths the HTTP protocol may serve without the ASGI layers
        (``api.security.protocol``): path -> ``handler(scope, body)``, after the body is read
        and its declared size checked against ``max_body``. Same per-IP limit, same handlers
        and answers as ``__call__``'s fast path; empty until the lifespan set the context."""
        ctx = self.fast.get("ctx")
        if ctx is None:
            return {}
        if not self._direct:
            limiter = self.limiter

            def guarded(serve: Callable[[Scope, bytes], Awaitable[Reply]],
                        refuse: Callable[[ApiError], Reply]
                        ) -> Callable[[Scope, bytes], Awaitable[Reply]]:
                async def direct(scope: Scope, body: bytes) -> Reply:
                    client = scope.get("client")
                    try:
                        limiter.hit(client[0] if client else "?")
                    except ApiError as err:
                        return refuse(err)
                    return await serve(scope, body)
                return direct

            self._direct[native.PLACE_PATH.encode()] = guarded(partial(native_place, ctx),
                                                               native_error)
            for path, perp in BINANCE_ORDER_PATHS.items():
                self._direct[path.encode()] = guarded(partial(binance_place, ctx, perp=perp),
                                                      binance_error)
        return self._direct

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        ip = client[0] if client else "?"
        try:
            self.limiter.hit(ip)
            if kind == "http":
                for name, value in scope["headers"]:
                    if name == b"content-length":
                        size = ascii_int(value)
                        if size is None or size > self.max_body:
                            raise ApiError(A.BODY_TOO_LARGE, f"request body over "
                                                             f"{self.max_body} bytes")
                        break
        except ApiError as err:
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": err.message})
                return
            await _error_response(scope["path"], err)(scope, receive, send)
            return
        if kind == "websocket":
            # the server's transport, so a socket whose client stopped reading can be cut
            # (a close frame cannot reach it through a full send buffer)
            protocol = getattr(send, "__self__", None)
            transport = getattr(protocol, "transport", None)
            send_texts = getattr(protocol, "send_texts", None)
            if send_texts is not None:  # frames batched per write (``api.ws.protocol``)
                scope["bastion.send_texts"] = send_texts
                # messages straight from the parser to the endpoint, not through ``receive``
                scope["bastion.ws_attach"] = protocol.attach  # type: ignore[union-attr]
                scope["bastion.write_texts"] = protocol.write_texts  # type: ignore[union-attr]
            if transport is not None:
                scope["bastion.abort"] = transport.abort
                scope["bastion.pin_sndbuf"] = _buffer_pin(transport, socket.SO_SNDBUF,
                                                          self.ws_sndbuf)
                pin_rcvbuf = _buffer_pin(transport, socket.SO_RCVBUF, self.ws_rcvbuf)
                if pin_rcvbuf is not None:
                    pin_rcvbuf()
            await self.app(scope, receive, send)
            return
        ctx = self.fast.get("ctx")
        if ctx is not None and scope["method"] == "POST":
            path = scope["path"]
            if path == native.PLACE_PATH:
                await place_order(ctx, scope, receive, send)
                return
            perp = BINANCE_ORDER_PATHS.get(path)
            if perp is not None:
                await place_binance(ctx, scope, receive, send, perp)
                return
        seen = 0
        limit = self.max_body

        async def capped() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise ApiError(A.BODY_TOO_LARGE, f"request body over {limit} bytes")
            return msg

        await self.app(scope, capped, send)


def asgi(settings: Settings, node_factory: Callable[[], Any] | None = None) -> Guard:
    """What uvicorn serves: the Guard wrapping the Starlette app."""
    guard: Guard = build(settings, node_factory).state.guard
    return guard


def build(settings: Settings, node_factory: Callable[[], Any] | None = None) -> Starlette:
    """Create the app; the node is opened in the lifespan (recovery happens there). Serve
    ``app.state.guard`` (see ``asgi``), not the bare app, to get limits and the fast path."""
    state: dict[str, Any] = {}
    server_key = load_server_key(settings.data_dir, settings.server_key)
    keys = KeyStore(settings.data_dir / "api" / "keys.json", server_key)
    admin_token = settings.admin_token or secrets.token_urlsafe(24)
    settings.admin_token = admin_token
    auth = Authenticator(keys, admin_token, recv_window_default=settings.recv_window_default,
                         recv_window_max=settings.recv_window_max)
    fast: dict[str, Any] = {}
    key_limiter = Limiter("per-key", *settings.key_rate)
    ip_limiter = Limiter("per-IP", *settings.ip_rate)
    metrics = Metrics()

    async def openapi(request: Request) -> Response:
        return Response(encode(state["spec"]), media_type="application/json")

    async def root(request: Request) -> Response:
        return HTMLResponse("<!doctype html><title>Bastion</title><h1>Bastion</h1><ul>"
                            "<li><a href=/docs>API docs</a></li><li><a href=/openapi.json>"
                            "OpenAPI</a></li><li><a href=/status>Status</a></li></ul>")

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _error_response(request.url.path, exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: A.NOT_FOUND, 405: A.METHOD_NOT_ALLOWED}.get(exc.status_code,
                                                                 A.MALFORMED_REQUEST)
        return _error_response(request.url.path, ApiError(code, str(exc.detail),
                                                          status=exc.status_code))

    async def on_crash(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error_response(request.url.path, ApiError("INTERNAL_ERROR", "internal error",
                                                          status=500))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        checkpoints = Checkpoints(settings.data_dir / "api" / "readmodel")
        restorer = Restorer(checkpoints)
        node = await open_node(settings, node_factory, restorer)
        gateway = Gateway(node)
        try:
            if isinstance(node, SharingKeys):  # a cluster gateway: keys in the shared bucket
                await node.share_keys(keys)
            ctx = Context(settings=settings, gateway=gateway, keys=keys, auth=auth,
                          key_limiter=key_limiter, ip_limiter=ip_limiter)
            hub = ws.Hub(ctx)
            ctx.hub = hub
            gateway.attach(restorer, checkpoints, settings.readmodel_checkpoint_every,
                           settings.readmodel_collapse_mb, settings.readmodel_checkpoint_seconds)
            gateway.add_listener(hub.publish)
            bws = binance_ws.BinanceWs(ctx, ListenKeys(settings.listen_key_ttl_ms))
            bws.attach()
            ctx.extra["binance_ws"] = bws
            metrics.bind(gateway, [ip_limiter, key_limiter])
            # native and Binance sockets share the hub's per-IP admission, so it counts both
            metrics.ws_sources["all"] = lambda: sum(hub.per_ip.values())
            handlers = {**native.handlers(ctx), **wallet.handlers(ctx), **admin.handlers(ctx),
                        **ops.handlers(ctx)}
            routes: list[BaseRoute] = [*route_table.mount(handlers)]
            routes += ws.routes(ctx, hub)
            routes += binance.routes(ctx)
            routes += wallet.binance_routes(ctx)
            routes.append(metrics_route(metrics))
            status_cm = _status(settings, ctx, routes)
            routes += bws.routes()  # after the status page's /ws/status
            state["spec"] = build_spec()
            routes += api_docs.routes(state["spec"])
        except BaseException:
            await close_node(node)
            gateway.detach()
            raise
        app.router.routes[:0] = routes
        app.state.ctx = ctx
        gc.collect()
        gc.freeze()  # startup state is long-lived: keep it out of every later collection
        fast["ctx"] = ctx
        hub.start()
        bws.start()
        tasks = [asyncio.create_task(Health(ctx, metrics).run())]
        pipeline = None
        try:
            pipeline = await _withdrawals(settings, ctx, node)
            if settings.demo and settings.feeder_interval > 0 and gateway.engine.perp.markets:
                # demo oracle + funding clock (bastion.feeds.demo): perpetuals trade only once
                # an index arrives, so the first round is journaled before requests are served
                from bastion.feeds.demo import DemoFeeder

                feeder = DemoFeeder(node.engine, node.submit, now_ms,
                                    period_s=settings.feeder_interval,
                                    anchor=settings.feeder_start_price)
                for cmd in feeder.index_commands():
                    await node.submit(cmd)
                tasks.append(asyncio.create_task(feeder.run()))
            print(banner(ctx, await ensure_demo_key(ctx)), flush=True)
            async with status_cm:
                yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if pipeline is not None:
                await pipeline.stop()
            await hub.stop()
            await bws.stop()
            # the read model follows until the node is closed: the final snapshot's child
            # writes its checkpoint from the same memory
            await close_node(node)
            gateway.detach()

    app = Starlette(
        routes=[Route("/openapi.json", openapi), Route("/", root)],
        lifespan=lifespan,
        exception_handlers={ApiError: on_api_error, HTTPException: on_http_error,
                            Exception: on_crash},
    )
    app.state.guard = Guard(app, limiter=ip_limiter, max_body=settings.max_body, fast=fast,
                            ws_sndbuf=settings.ws_socket_buffer,
                            ws_rcvbuf=settings.ws_socket_rcvbuf)
    app.state.settings = settings
    app.state.keys = keys
    app.state.metrics = metrics
    return app


def _status(settings: Settings, ctx: Context, routes: list[BaseRoute]
            ) -> contextlib.AbstractAsyncContextManager[None]:
    """Mount the status page and feed it the engine's market modes, if the module is present."""
    try:
        from bastion.status import Egress, StatusRuntime, StatusService, status_routes
    except ImportError:  # pragma: no cover - status is part of the tree
        return contextlib.nullcontext()
    engine = ctx.gateway.engine

    def prime(service: Any) -> None:
        for name, mkt in sorted(engine.markets.items()):
            service.tracker.register_market(name)
            service.tracker.observe_market_mode(name, mkt.mode, mkt.mode_reason)

    service = _status_service(settings, StatusService, prime)
    runtime = StatusRuntime(service, egress=Egress.parse(settings.webhook_allow))
    assert settings.admin_token is not None
    routes += status_routes(runtime, settings.admin_token)

    def observe(ev: Any) -> None:
        service.tracker.observe_market_mode(ev.market, ev.new, ev.reason[:500], ev.ts)

    ctx.gateway.on_mode_change(observe)
    ctx.extra["status"] = service

    @asynccontextmanager
    async def running() -> AsyncIterator[None]:
        try:
            share = getattr(ctx.gateway.node, "share_status", None)
            if share is not None:  # a cluster gateway: status records shared by all gateways
                await share(service, runtime.webhooks)
            async with runtime.running():
                yield
        finally:
            service.close()

    return running()


def _status_service(settings: Settings, factory: Callable[..., Any],
                    prime: Callable[[Any], None]) -> Any:
    """The status service on its database, primed with the markets; if the database fails,
    trading still starts and the page runs from memory, saying so in an incident (details go
    to the log)."""
    path = settings.data_dir / "status" / "status.db"
    try:
        service = factory(path, demo=settings.demo)
    except Exception:
        log.exception("status database %s cannot be opened; the status page runs degraded "
                      "(live state only, nothing saved) until it is fixed", path)
    else:
        try:
            prime(service)
            return service
        except Exception:
            log.exception("status database %s failed at start; the status page runs degraded "
                          "(live state only, nothing saved) until it is fixed", path)
            with contextlib.suppress(Exception):
                service.close()
    service = factory(":memory:", demo=settings.demo)
    prime(service)
    service.operator.open_incident(
        "Status page degraded: history unavailable",
        "The status database could not be opened at start. Trading is not affected. This "
        "page shows live state only: uptime history, past incidents and operator updates are "
        "not saved until the operators fix it.", [], impact="minor")
    return service


async def _withdrawals(settings: Settings, ctx: Context, node: Any) -> Any:
    """The withdrawal pipeline beside this (leader) node: worker, deposit watcher, custody
    connector, and the custody simulator in the embedded default (``bastion.withdrawals``)."""
    from bastion.withdrawals.runtime import Pipeline

    pipeline = Pipeline(node, settings.data_dir, demo=settings.demo)
    await pipeline.start()
    pipeline.watch_status(ctx.extra.get("status"))
    ctx.extra["withdrawals"] = pipeline
    return pipeline

