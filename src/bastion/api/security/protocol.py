"""The HTTP connection layer under the ASGI app: limits a request cannot reach.

A slowloris client opens sockets and sends headers a byte at a time; nothing above the
protocol ever sees it, so the limits live here, on uvicorn's httptools protocol:

- a **header timeout**: a request's headers must be complete within ``header_timeout`` s of
  the connection opening (or of the request's first byte on a kept-alive connection);
- a **per-IP cap on connections that have not completed a request's headers**: beyond it, a
  new socket from that address is cut at once, so one address cannot take the file table;
- the **server-wide concurrency cap** is uvicorn's ``limit_concurrency``, which answers 503.

Idle kept-alive connections are closed by uvicorn's keep-alive timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bastion import acktrace
from bastion.api.service.eager import start_eagerly
from bastion.textnum import ascii_int

log = logging.getLogger("bastion.api")


class _Limits:
    """Shared by every connection of one server: pending connections per IP and the log
    throttle (one line per IP and kind per ``LOG_EVERY`` seconds, never one per socket)."""

    LOG_EVERY = 10.0

    def __init__(self, header_timeout: float, pending_per_ip: int) -> None:
        self.header_timeout = header_timeout
        self.pending_per_ip = pending_per_ip
        self.pending: dict[str, int] = defaultdict(int)
        self.refused = 0
        self.timed_out = 0
        self._logged: dict[tuple[str, str], float] = {}

    def note(self, ip: str, kind: str, what: str) -> None:
        now = time.monotonic()
        if now - self._logged.get((ip, kind), -self.LOG_EVERY) >= self.LOG_EVERY:
            self._logged[(ip, kind)] = now
            if len(self._logged) > 10_000:
                self._logged.clear()
            log.warning("connection limits: %s from %s (refused %d, header timeouts %d so "
                        "far)", what, ip, self.refused, self.timed_out)


#: ``handler(scope, body) -> (status, JSON body, extra headers)``; never raises
DirectHandler = Callable[[dict[str, Any], bytes], Awaitable[tuple[int, bytes,
                                                                  list[tuple[bytes, bytes]]]]]

_STATUS_LINE = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}


class _DirectCycle:
    """Stands in for uvicorn's ``RequestResponseCycle`` while a request is served directly:
    the attributes uvicorn's connection code reads (``connection_lost``, ``shutdown``, the
    pipelining check) mean what they mean there."""

    __slots__ = ("body", "disconnected", "handler", "keep_alive", "more_body", "receiving",
                 "response_complete", "scope")

    def __init__(self, handler: DirectHandler, scope: dict[str, Any], keep_alive: bool) -> None:
        self.handler = handler
        self.scope = scope
        self.keep_alive = keep_alive
        self.body: list[bytes] = []
        #: until its message is complete; after that the parser's callbacks belong to a later
        #: request (one uvicorn queued, or an upgrade, which leaves ``cycle`` as it was)
        self.receiving = True
        self.more_body = True
        self.disconnected = False
        self.response_complete = False

    @property
    def message_event(self) -> _DirectCycle:
        return self  # ``connection_lost`` sets it: nothing waits on it here

    def set(self) -> None:
        pass


def guarded_protocol(header_timeout: float, pending_per_ip: int) -> type[HttpToolsProtocol]:
    """An ``HttpToolsProtocol`` subclass enforcing the limits above (pass it as uvicorn's
    ``http``); each call has its own counters.

    Both per-connection clocks (the header timeout and uvicorn's keep-alive timeout) are
    *lazy*: a request only stamps the time, and a connection's one timer, when it fires, either
    acts or re-arms itself for what is left. uvicorn's own keep-alive arms a timer after every
    response and cancels it on the next request, and the header clock did the same per request:
    two timer handles per order, a measurable share of the loop's CPU per order at low load
    (``docs/trading-api.md``). The deadlines are the same; only their bookkeeping moved.

    **Direct order entry.** If the app offers ``direct_routes()`` (``api.app.Guard``), a
    ``POST`` to one of those paths with a ``Content-Length`` within the app's ``max_body``,
    HTTP/1.1, no ``Expect``, no pipelined request ahead of it and the server under its
    concurrency cap, is served without the ASGI layers: the body is collected here and the
    handler's answer goes out in one write. Anything else takes uvicorn's path unchanged
    (which also answers what the direct path refuses to take: 413, 503, ...)."""
    limits = _Limits(header_timeout, pending_per_ip)

    class GuardedHttpProtocol(HttpToolsProtocol):
        bastion_limits = limits

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._ip = ""
            self._pending = False
            self._header_timer: asyncio.TimerHandle | None = None
            self._headers_since = 0.0
            #: when the connection last went idle after a response (None: not idle)
            self._idle_since: float | None = None
            self._idle_timer: asyncio.TimerHandle | None = None
            routes = getattr(self.app, "direct_routes", None)
            self._direct: dict[bytes, DirectHandler] = routes() if routes is not None else {}
            self._max_body: int = getattr(self.app, "max_body", 0)

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._ip = self.client[0] if self.client else "?"
            if limits.pending[self._ip] >= limits.pending_per_ip:
                limits.refused += 1
                limits.note(self._ip, "cap", f"over {limits.pending_per_ip} connections without a "
                                      "complete request")
                transport.abort()
                return
            self._wait_for_headers()

        def _wait_for_headers(self) -> None:
            if not self._pending:
                self._pending = True
                limits.pending[self._ip] += 1
                self._headers_since = self.loop.time()
            if self._header_timer is None:
                self._header_timer = self.loop.call_at(
                    self._headers_since + limits.header_timeout, self._headers_check)

        def _headers_done(self) -> None:
            if self._pending:
                self._pending = False
                left = limits.pending[self._ip] - 1
                if left > 0:
                    limits.pending[self._ip] = left
                else:
                    limits.pending.pop(self._ip, None)

        def _headers_check(self) -> None:
            self._header_timer = None
            if not self._pending:
                return  # the next request re-arms it
            due = self._headers_since + limits.header_timeout
            if self.loop.time() < due:  # a later request started its own clock
                self._header_timer = self.loop.call_at(due, self._headers_check)
                return
            limits.timed_out += 1
            limits.note(self._ip, "timeout", f"request headers not complete within "
                                  f"{limits.header_timeout:g} s")
            self._headers_done()
            self.transport.abort()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._wait_for_headers()

        def on_headers_complete(self) -> None:
            self._headers_done()
            if self._direct:
                handler = self._direct.get(self.url)
                if handler is not None and self._take_direct(handler):
                    return
            super().on_headers_complete()

        def _take_direct(self, handler: DirectHandler) -> bool:
            """Serve this request directly if it qualifies (see the class docstring)."""
            parser = self.parser
            if (parser.get_method() != b"POST" or parser.get_http_version() != "1.1"
                    or self.expect_100_continue or parser.should_upgrade()
                    or self.root_path or self.access_log
                    or (self.cycle is not None and not self.cycle.response_complete)):
                return False
            cap = self.limit_concurrency
            if cap is not None and (len(self.connections) >= cap or len(self.tasks) >= cap):
                return False
            size = None
            for name, value in self.headers:
                if name == b"content-length":
                    size = ascii_int(value)
                    break
            if size is None or size > self._max_body:
                return False
            scope: Any = self.scope
            scope["method"] = "POST"
            scope["path"] = self.url.decode("ascii")
            scope["raw_path"] = self.url
            scope["query_string"] = b""
            self.cycle = _DirectCycle(handler, scope,  # type: ignore[assignment]
                                      parser.should_keep_alive())
            return True

        def on_body(self, body: bytes) -> None:
            cycle: Any = self.cycle
            if type(cycle) is _DirectCycle and cycle.receiving:
                cycle.body.append(body)
                return
            super().on_body(body)

        def on_message_complete(self) -> None:
            cycle: Any = self.cycle
            if type(cycle) is _DirectCycle and cycle.receiving:
                cycle.receiving = cycle.more_body = False
                trace = acktrace.TRACE
                if trace is not None:
                    trace.received = acktrace.now()
                # no task: the order runs here up to its journal wait and on from the
                # journal's completion (a task per order cost ~5 us of the loop's time). A
                # server shutting down still waits for it: the connection stays open until
                # the answer is written (uvicorn's ``shutdown`` only clears keep-alive)
                start_eagerly(self._serve_direct(cycle))
                return
            super().on_message_complete()

        async def _serve_direct(self, cycle: _DirectCycle) -> None:
            try:
                status, body, extra = await cycle.handler(cycle.scope, b"".join(cycle.body))
                if self.flow.write_paused and not cycle.disconnected:
                    await self.flow.drain()
                if cycle.disconnected or self.transport.is_closing():
                    return
                head = [_STATUS_LINE[status]]
                for name, value in self.server_state.default_headers:
                    head += (name, b": ", value, b"\r\n")
                head.append(b"content-type: application/json\r\ncontent-length: %d\r\n"
                            % len(body))
                for name, value in extra:
                    head += (name, b": ", value, b"\r\n")
                if not cycle.keep_alive:
                    head.append(b"connection: close\r\n")
                head += (b"\r\n", body)
                self.transport.write(b"".join(head))
                cycle.response_complete = True
                if not cycle.keep_alive:
                    self.transport.close()
                self.on_response_complete()
            except asyncio.CancelledError:  # what it awaited was cancelled (a node stopping)
                self.transport.close()
            except Exception:
                self.logger.exception("direct order entry failed")
                self.transport.close()

        # uvicorn's keep-alive timeout, kept lazily (see the docstring above)

        def _unset_keepalive_if_required(self) -> None:
            self._idle_since = None

        def on_response_complete(self) -> None:
            # uvicorn's own, except that going idle stamps the time instead of arming a timer
            self.server_state.total_requests += 1
            if self.transport.is_closing():
                return
            self._idle_since = None
            self.flow.resume_reading()
            if self.pipeline:
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)
                return
            self._idle_since = self.loop.time()
            if self._idle_timer is None:
                self._idle_timer = self.loop.call_at(
                    self._idle_since + self.timeout_keep_alive, self._idle_check)

        def _idle_check(self) -> None:
            self._idle_timer = None
            since = self._idle_since
            if since is None:
                return  # busy: the next response re-arms it
            due = since + self.timeout_keep_alive
            if self.loop.time() < due:
                self._idle_timer = self.loop.call_at(due, self._idle_check)
                return
            self.timeout_keep_alive_handler()

        def connection_lost(self, exc: Exception | None) -> None:
            self._headers_done()
            for timer in (self._header_timer, self._idle_timer):
                if timer is not None:
                    timer.cancel()
            self._header_timer = self._idle_timer = None
            super().connection_lost(exc)

    return GuardedHttpProtocol
