"""The custody/chain simulator as a real subprocess (`bastion custody-sim`) for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from serverproc import free_port


class Sim:
    def __init__(self, data: Path, block_ms: int = 100, port: int | None = None) -> None:
        self.data = data
        self.block_ms = block_ms
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=10.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> Sim:
        log = open(self.data.parent / f"sim-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from bastion.cli.main import app; app()", "custody-sim",
             "--port", str(self.port), "--data", str(self.data), "--block-ms",
             str(self.block_ms)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_up(timeout)
        return self

    def wait_up(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.http.get("/health", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("custody simulator did not come up")

    def fault(self, mode: str, asset: str | None = None, delay_ms: int = 3000) -> None:
        for _ in range(50):  # it may be restarting after a simulated crash
            self.wait_up()
            try:
                r = self.http.post("/faults", json={"mode": mode, "asset": asset,
                                                    "delay_ms": delay_ms})
            except httpx.HTTPError:
                continue
            assert r.status_code == 200, r.text
            return
        raise RuntimeError("could not switch the simulator's fault mode")

    def ledger(self) -> dict[str, Any]:
        self.wait_up()
        body: dict[str, Any] = self.http.get("/v1/ledger").json()
        return body

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.http.close()
