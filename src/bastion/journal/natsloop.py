"""A NATS connection on its own event-loop thread.

The ``Journal`` interface is synchronous (the group-commit writer thread, replay and the CLI
call it), while nats-py is asyncio. Running the client on a private loop lets both sides use
it: synchronous callers block on ``run``, other loops await ``call``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from bastion.journal.errors import DurabilityError

T = TypeVar("T")


class NatsUnreachableError(DurabilityError):
    code = "NATS_UNREACHABLE"


class NatsLoop:
    """Connects at construction (retrying for ``connect_wait`` seconds, then a clear error
    naming every server tried); reconnects forever afterwards."""

    def __init__(
        self,
        servers: list[str],
        *,
        name: str = "bastion",
        connect_wait: float = 10.0,
        request_timeout: float = 2.0,
    ) -> None:
        if not servers:
            raise NatsUnreachableError("no NATS servers given")
        self.servers = list(servers)
        self.request_timeout = request_timeout
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="nats-io", daemon=True)
        self._thread.start()
        self.disconnects = 0
        try:
            self.nc: Client = self.run(self._connect(name, connect_wait), timeout=None)
        except BaseException:
            self._stop_loop()
            raise
        self.js: JetStreamContext = self.nc.jetstream(timeout=request_timeout)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def _connect(self, name: str, wait: float) -> Client:
        deadline = self.loop.time() + wait
        last: BaseException | None = None
        while True:
            remaining = max(deadline - self.loop.time(), 0.5)
            try:
                # with unlimited reconnects nats-py retries a first connect forever too
                return await asyncio.wait_for(nats.connect(
                    self.servers,
                    name=name,
                    connect_timeout=1,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.1,
                    ping_interval=1,
                    max_outstanding_pings=3,
                    disconnected_cb=self._on_disconnect,
                    error_cb=self._on_error,
                ), remaining)
            except Exception as exc:
                last = exc
            if self.loop.time() >= deadline:
                raise NatsUnreachableError(
                    f"cannot reach NATS at {', '.join(self.servers)} after {wait:.0f} s "
                    f"({type(last).__name__}: {last}); is nats-server running there?"
                )
            await asyncio.sleep(0.2)

    async def _on_disconnect(self) -> None:
        self.disconnects += 1

    async def _on_error(self, exc: Exception) -> None:
        return None

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        """Block the calling thread (never the NATS loop itself) until ``coro`` finishes."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("NatsLoop.run called from its own loop")
        return self.submit(coro).result(timeout)

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` from another event loop."""
        return await asyncio.wrap_future(self.submit(coro))

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def spawn(self, fn: Callable[[], Awaitable[Any]]) -> None:
        self.loop.call_soon_threadsafe(lambda: self.loop.create_task(_wrap(fn)))

    def close(self) -> None:
        if self.loop.is_closed():
            return
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self.run(self.nc.close(), timeout=5)
        self._stop_loop()

    def _stop_loop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


async def _wrap(fn: Callable[[], Awaitable[Any]]) -> None:
    await fn()
