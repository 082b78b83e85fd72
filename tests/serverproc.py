"""A real Bastion server in a subprocess on a loopback port, and a signing HTTP client.

Shared by the API, WebSocket, ccxt and gateway tests: everything goes over a real socket to a
real uvicorn process, nothing in-process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from bastion.api.security.auth import sign
from bastion.cluster.childlife import bind_children, child_setup

ADMIN = "test-admin-token"
DEMO_KEY = "demo-key-0001"
DEMO_SECRET = "demo-secret-0001"

#: a killed test run (SIGKILL, a CI timeout) takes its servers along
bind_children()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, data_dir: Path, port: int | None = None, **env: str) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"
        #: Python run in the server process before it starts (e.g. a resource limit)
        self.prelude = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def start(self, timeout: float = 60.0) -> Server:
        """Up to ``timeout`` s to answer: on the shared 2-core machine under other suites'
        load a start has taken 15-25 s (20 s was not enough margin)."""
        env = dict(os.environ)
        env.update({
            "BASTION_DATA": str(self.data_dir), "BASTION_HTTP_PORT": str(self.port),
            "BASTION_ADMIN_TOKEN": ADMIN, "BASTION_DEMO_KEY": DEMO_KEY,
            "BASTION_DEMO_SECRET": DEMO_SECRET, "BASTION_HEALTH_INTERVAL": "5",
            "BASTION_DEMO_TRAFFIC": "0",
        })
        env.update(self.env)
        self.log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-c", f"{self.prelude}\nfrom bastion.cli.main import app; app()",
             "run"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=child_setup())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n"
                                   + self.log_path.read_text()[-3000:])
            try:
                if httpx.get(self.url + "/v1/time", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError("server did not come up:\n" + self.log_path.read_text()[-3000:])

    def stop(self, timeout: float = 20.0) -> int:
        """Ctrl-C (clean shutdown with final snapshot)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        rc = self.proc.wait(timeout)
        self.log.close()
        return rc

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs at all."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if hasattr(self, "log"):
            self.log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running(data_dir: Path, **env: str) -> Iterator[Server]:
    srv = Server(data_dir, **env).start()
    try:
        yield srv
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            try:
                srv.stop()
            except subprocess.TimeoutExpired:
                srv.kill()


class Client:
    """Signs native API requests: HMAC-SHA256(secret, ts + METHOD + path[?query] + body)."""

    def __init__(self, base: str, key: str | None = DEMO_KEY, secret: str | None = DEMO_SECRET,
                 timeout: float = 10.0) -> None:
        self.base = base
        self.key = key
        self.secret = secret
        self.http = httpx.Client(base_url=base, timeout=timeout)
        self._last_ts = 0

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, body: Any = None,
                params: dict[str, Any] | None = None, signed: bool = True,
                headers: dict[str, str] | None = None, ts: int | None = None) -> httpx.Response:
        if params:
            path = path + "?" + urlencode(params)
        raw = b"" if body is None else (body if isinstance(body, bytes)
                                        else json.dumps(body).encode())
        h = {"content-type": "application/json"} if raw else {}
        if signed and self.key and self.secret:
            if ts is None:
                # a signature is accepted once: two identical requests in one millisecond
                # need different timestamps
                ts = max(time.time_ns() // 1_000_000, self._last_ts + 1)
                self._last_ts = ts
            stamp = str(ts)
            h.update({"X-BX-APIKEY": self.key, "X-BX-TIMESTAMP": stamp,
                      "X-BX-SIGNATURE": sign(self.secret, stamp.encode() + method.encode()
                                             + path.encode() + raw)})
        h.update(headers or {})
        return self.http.request(method, path, content=raw or None, headers=h)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        return self.request("POST", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", path, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        return self.request("PATCH", path, body, **kw)

    def place(self, **order: Any) -> httpx.Response:
        return self.post("/v1/orders", order)


class Admin:
    def __init__(self, base: str, token: str = ADMIN) -> None:
        self.http = httpx.Client(base_url=base, timeout=10.0,
                                 headers={"authorization": f"Bearer {token}"})

    def post(self, path: str, body: Any) -> httpx.Response:
        return self.http.post(path, json=body)

    def get(self, path: str) -> httpx.Response:
        return self.http.get(path)

    def new_account(self, account: int, funds: dict[str, str] | None = None,
                    permissions: list[str] | None = None) -> Client:
        """Fund ``account`` and return a client with a fresh key for it."""
        for asset, amount in (funds or {"USDT": "1000000", "BTC": "100", "ETH": "1000"}).items():
            r = self.post("/admin/deposits", {"account": account, "asset": asset,
                                              "amount": amount})
            assert r.status_code == 201, r.text
        r = self.post("/admin/keys", {"account": account,
                                      "permissions": permissions or ["read", "trade"]})
        assert r.status_code == 201, r.text
        k = r.json()
        return Client(str(self.http.base_url).rstrip("/"), k["key"], k["secret"])

    def health(self) -> dict[str, Any]:
        r = self.get("/admin/health")
        assert r.status_code == 200, r.text
        result: dict[str, Any] = r.json()
        return result

    def close(self) -> None:
        self.http.close()
