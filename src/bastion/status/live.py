"""The `/ws/status` channel: a snapshot on connect, then every public change as it happens."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
from starlette.websockets import WebSocket, WebSocketDisconnect

from bastion.status import statuspage
from bastion.status.model import Change
from bastion.status.service import StatusService

PUBLIC_EVENTS = ("component.", "incident.", "maintenance.")


class StatusHub:
    """Fan-out with one bounded queue per client; a client too slow to keep up gets a fresh
    snapshot instead of an unbounded backlog, so it can never hold memory or miss the end state."""

    def __init__(self, service: StatusService, queue_size: int = 100) -> None:
        self.service = service
        self.queue_size = queue_size
        self._clients: set[asyncio.Queue[bytes]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Any = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._unsubscribe = self.service.board.subscribe(self._on_change)

    async def stop(self) -> None:
        if self._unsubscribe:
            self._unsubscribe()

    def _snapshot(self) -> bytes:
        return msgspec.json.encode(
            {"type": "snapshot", "summary": statuspage.summary_json(self.service.view())}
        )

    def _on_change(self, change: Change) -> None:
        if not change.kind.startswith(PUBLIC_EVENTS) or self._loop is None:
            return
        message = msgspec.json.encode(statuspage.change_json(change, self.service.page["id"]))
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._fanout, message)

    def _fanout(self, message: bytes) -> None:
        for q in self._clients:
            if q.full():
                while not q.empty():
                    q.get_nowait()
                q.put_nowait(self._snapshot())
            else:
                q.put_nowait(message)

    @property
    def clients(self) -> int:
        return len(self._clients)

    async def endpoint(self, websocket: WebSocket) -> None:
        await websocket.accept()
        q: asyncio.Queue[bytes] = asyncio.Queue(self.queue_size)
        self._clients.add(q)
        reader = asyncio.create_task(self._until_closed(websocket))
        try:
            await websocket.send_text(self._snapshot().decode())
            while True:
                getter = asyncio.create_task(q.get())
                done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    return
                await websocket.send_text(getter.result().decode())
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            self._clients.discard(q)
            reader.cancel()

    @staticmethod
    async def _until_closed(websocket: WebSocket) -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
