"""A deployment a drill owns: the embedded node and gateway (``drills.host``) in a subprocess
on a loopback port, with its data directory in a temp dir. A drill can stop it cleanly, SIGKILL
it, restart it on the same data, or seed its journal before the first start.

The cluster (issue 9) plugs in here as another ``Deployment`` with the same verbs.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import msgspec

from bastion.core import commands as C
from bastion.drills.client import OperatorClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Deployment:
    """``start()``, ``stop()`` (SIGINT: drain, final snapshot), ``kill()`` (SIGKILL: nothing
    runs), ``restart()``; ``operator`` is its operator client, ``url`` its base URL."""

    def __init__(self, root: Path, *, demo: bool = True, env: dict[str, str] | None = None,
                 reopen_recovery_s: float = 0.0) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.token = secrets.token_urlsafe(18)
        self.env = dict(env or {})
        self.demo = demo
        self.reopen_recovery_s = reopen_recovery_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / "server.log"
        self.starts = 0
        self.operator = OperatorClient(self.url, self.token)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def seed(self, steps: Sequence[tuple[int, C.Command]], start_ms: int) -> int:
        """Journal setup commands before the first start, each ``dt`` ms after the previous
        one on a simulated clock from ``start_ms`` (history such as hours of funding ticks);
        the clock never runs ahead of the wall clock the server will use. Returns last seq."""
        from bastion.node.node import Node

        now = [start_ms]
        if start_ms + sum(dt for dt, _ in steps) > time.time() * 1000:
            raise ValueError("seeded history would end in the future")
        async with Node(self.data, clock=lambda: now[0]) as node:
            for dt, cmd in steps:
                now[0] += dt
                events = await node.submit(cmd)
                bad = [e for e in events if type(e).__name__ == "Rejected"]
                if bad:
                    raise RuntimeError(f"seed command {cmd!r} refused: {bad}")
            return node.last_seq

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "BASTION_DATA": str(self.data), "BASTION_HTTP_PORT": str(self.port),
            "BASTION_ADMIN_TOKEN": self.token, "BASTION_HEALTH_INTERVAL": "5",
            "BASTION_DEMO": "1" if self.demo else "0", "BASTION_RATE_KEY": "0",
            "BASTION_RATE_IP": "0", "BASTION_DEMO_TRAFFIC": "0",
            "BASTION_REOPEN_RECOVERY_S": str(self.reopen_recovery_s),
        })
        env.update(self.env)
        return env

    def start(self, timeout: float = 30.0) -> float:
        """Start and wait until it answers; returns the seconds it took."""
        t0 = time.monotonic()
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child from here on
        self.proc = subprocess.Popen([sys.executable, "-m", "bastion.drills.host"],
                                     env=self._env(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.starts += 1
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(self.url + "/v1/time", timeout=0.5).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"server did not come up in {timeout} s:\n{self.tail()}")

    async def wait_up(self, timeout: float = 30.0) -> float:
        """Wait until the (self-restarting) server answers again; returns the seconds."""
        t0 = time.monotonic()
        async with httpx.AsyncClient(timeout=0.5) as http:
            while time.monotonic() - t0 < timeout:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}:\n"
                                       f"{self.tail()}")
                try:
                    if (await http.get(self.url + "/v1/time")).status_code == 200:
                        return time.monotonic() - t0
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError(f"server not back within {timeout} s:\n{self.tail()}")

    async def wait_restart(self, timeout: float = 60.0) -> float:
        """After asking the server to restart itself (a live rollback): wait for it to stop
        answering, then to answer again; returns the seconds it was away."""
        t0 = time.monotonic()
        async with httpx.AsyncClient(timeout=0.5) as http:
            while time.monotonic() - t0 < timeout:
                try:
                    await http.get(self.url + "/v1/time")
                except httpx.HTTPError:
                    break
                await asyncio.sleep(0.01)
        down = time.monotonic()
        await self.wait_up(timeout - (down - t0))
        return time.monotonic() - down

    async def start_async(self, timeout: float = 30.0) -> float:
        return await asyncio.to_thread(self.start, timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGINT: in-flight commands drain, a final snapshot is written."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (the crash the journal must survive)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    async def inject(self, cmd: C.Command) -> dict[str, object]:
        """Journal a raw command through the running node (the fault injector)."""
        reply = await self.operator.call("POST", "/drill/submit",
                                         msgspec.to_builtins(cmd))
        if not reply.ok:
            raise RuntimeError(f"inject {type(cmd).__name__} failed: {reply.body}")
        body: dict[str, object] = reply.body
        return body

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    async def close(self) -> None:
        await asyncio.to_thread(self.stop)
        await self.operator.close()


DeploymentFactory = Callable[..., Deployment]
