"""The OpenAPI documents validate, and ``/docs`` (Swagger UI, served offline) renders in
headless Chromium where "Try it out" runs a public route against the live server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from websockets.asyncio.client import connect

from bastion.api.docs import to_openapi_30
from bastion.api.openapi import build_spec
from chromium_setup import FLAGS, require_chromium
from serverproc import Server, running


def test_openapi_documents_validate() -> None:
    spec = build_spec()
    validate(spec)  # 3.1 (what /openapi.json serves)
    validate(to_openapi_30(spec))  # 3.0 (what the bundled Swagger UI reads)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(tmp_path_factory.mktemp("docs") / "data", BASTION_FEEDER_INTERVAL="0") as s:
        yield s


class Page:
    """One Chromium tab driven over the DevTools protocol (only what this test needs)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.n = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.n += 1
        await self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(await self.ws.recv())
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg["result"]
                return result

    async def eval(self, expression: str) -> Any:
        out = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return out["result"].get("value")

    async def until(self, expression: str, what: str, timeout: float = 90.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = await self.eval(expression)
            if value:
                return value
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")


#: the operation block of ``GET /v1/time`` in Swagger UI's DOM
_BLOCK = ("[...document.querySelectorAll('.opblock')].find(b => b.querySelector("
          "'.opblock-summary-path')?.getAttribute('data-path') === '/v1/time')")


def _devtools_port(proc: subprocess.Popen[str]) -> int:
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if "DevTools listening on ws://" in line:
            # keep draining its log so chromium never blocks on a full pipe
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return int(line.split("ws://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        if not line and proc.poll() is not None:
            break
    raise RuntimeError("chromium did not start its DevTools endpoint")


def _page_target(port: int) -> str:
    """The tab's DevTools socket (the tab may appear a moment after the endpoint does)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        pages = [t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"]
        if pages:
            return str(pages[0])
        time.sleep(0.2)
    raise RuntimeError("chromium opened no tab")


def test_docs_try_it_out_in_chromium(srv: Server) -> None:
    binary = require_chromium()
    # chromium's helper processes may still write the profile after the main one exits:
    # end its whole process group, and never fail the test on the profile's clean-up
    with tempfile.TemporaryDirectory(prefix="chromium-profile-",
                                     ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}",
                                 "--remote-debugging-port=0", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            page_ws = _page_target(_devtools_port(proc))
            result = asyncio.run(_try_it_out(page_ws, f"{srv.url}/docs"))
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    status, body = result
    assert status == "200"
    server_time = json.loads(body)["server_time"]
    assert abs(server_time - time.time() * 1000) < 60_000


async def _try_it_out(page_ws: str, url: str) -> tuple[str, str]:
    async with connect(page_ws, max_size=None) as ws:
        page = Page(ws)
        await page.call("Page.navigate", url=url)
        # rendered from the offline bundle: every operation of the document is listed
        count = await page.until("document.querySelectorAll('.opblock').length",
                                 "Swagger UI to render the operations")
        assert count >= 20
        await page.until(f"!!{_BLOCK}", "the GET /v1/time block")
        await page.eval(f"{_BLOCK}.querySelector('button.opblock-summary-control').click()")
        await page.until(f"!!{_BLOCK}.querySelector('.try-out__btn')", "the Try it out button")
        await page.eval(f"{_BLOCK}.querySelector('.try-out__btn').click()")
        await page.until(f"!!{_BLOCK}.querySelector('.execute')", "the Execute button")
        await page.eval(f"{_BLOCK}.querySelector('.execute').click()")
        status = await page.until(
            f"{_BLOCK}.querySelector('.live-responses-table tbody .response-col_status')?.innerText",
            "the live response")
        body = await page.until(
            f"{_BLOCK}.querySelector('.live-responses-table tbody .microlight')?.innerText",
            "the response body")
        return str(status).strip(), str(body)
