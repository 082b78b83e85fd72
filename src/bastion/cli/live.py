"""``bastion rollback --live``: roll back the RUNNING deployment through its operator API."""

from __future__ import annotations

import time

import httpx
import typer

from bastion.cli.ops import call, show


def rollback_live(url: str, token: str, who: str, why: str, to_snapshot: str | None,
                  to_seq: int | None, recovery_s: float) -> None:
    """Halt, roll back, restart, reopen in recovery: the running server does it in one go."""

    t0 = time.monotonic()
    show(call(url, token, "POST", "/admin/ops/rollback", {
        "who": who, "why": why, "to_snapshot": to_snapshot, "to_seq": to_seq,
        "recovery_s": recovery_s}))
    base = url.rstrip("/")
    while time.monotonic() - t0 < 30:          # the server stops ...
        try:
            httpx.get(base + "/v1/time", timeout=0.5)
        except httpx.HTTPError:
            break
        time.sleep(0.01)
    while time.monotonic() - t0 < 120:         # ... rolls back and serves again
        try:
            r = httpx.get(base + "/v1/markets", timeout=2)
            if r.status_code == 200:
                typer.echo(f"back up after {time.monotonic() - t0:.1f} s: " + ", ".join(
                    f"{m['market']}={m['mode']}" for m in r.json()))
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    typer.echo("error: TIMEOUT: the server did not come back within 120 s", err=True)
    raise typer.Exit(2)
