"""The asynchronous side of the status service, started with the HTTP server's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bastion.status.egress import Egress
from bastion.status.live import StatusHub
from bastion.status.service import StatusService
from bastion.status.webhooks import RetryPolicy, WebhookDispatcher

log = logging.getLogger("bastion.status")


class StatusRuntime:
    """Ticks the time-based rules, serves the WebSocket channel and delivers webhooks.

    A server that mounts `status_routes(runtime, ...)` must run `runtime.running()` in its
    lifespan; `create_app` does that itself.
    """

    def __init__(
        self,
        service: StatusService,
        *,
        tick_interval_s: float = 0.25,
        retry: RetryPolicy | None = None,
        egress: Egress | None = None,
    ) -> None:
        self.service = service
        self.tick_interval_s = tick_interval_s
        self.hub = StatusHub(service)
        self.webhooks = WebhookDispatcher(service, retry, egress)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval_s)
            try:
                await asyncio.to_thread(self.service.tracker.tick)
            except Exception:
                log.exception("status tick failed; retrying next interval")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        await self.hub.start()
        await self.webhooks.start()
        ticker = asyncio.create_task(self._ticker())
        try:
            yield
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await self.webhooks.stop()
            await self.hub.stop()

    @asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """Starlette `lifespan=` hook for standalone use."""
        async with self.running():
            yield
