"""Binance WebSocket market-data fan-out: ``@depth`` messages per second delivered to 100 and
1,000 subscribers while orders flow, and what it costs the event loop.

    python bench/ws_fanout.py                    # phases: 0, 100, 1000 subscribers
    python bench/ws_fanout.py --subs 0 100 --seconds 8 --rate 500 --json
    python bench/ws_fanout.py --stream btcusdt@depth         # Binance's 1,000 ms speed

Starts its own server subprocess (rate limits off, per-IP socket cap raised). For each phase a
separate subscriber process opens N connections to ``/ws/btcusdt@depth@100ms`` (``--stream``)
and counts what arrives; this process drives orders over the native WebSocket at a fixed rate
(open loop) and records acknowledgement latency. The server's health line (once a second) gives the
worst event-loop stall. The 0-subscriber phase is the baseline: the other phases are
reported as ratios to it (same run, same machine).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway import (  # noqa: E402
    ADMIN,
    KEY,
    SECRET,
    OrderGen,
    _ws_msg,
    free_port,
    pct,
    second_key,
    ws_connect,
)

STREAM = "btcusdt@depth@100ms"


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65_536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


# ------------------------------------------------------------------ subscriber process

async def subscribe(url: str, n: int, seconds: float, ready_file: str, stream: str
                    ) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    counts = [0] * n
    lat: list[float] = []
    closed = 0

    async def one(i: int, ws: Any) -> None:
        nonlocal closed
        try:
            async for raw in ws:
                counts[i] += 1
                if i == 0:  # one connection's latency: engine time E -> received
                    m = re.search(rb'"E":(\d+)', raw if isinstance(raw, bytes)
                                  else raw.encode())
                    if m:
                        lat.append(time.time() * 1000 - int(m.group(1)))
        except Exception:
            closed += 1

    socks = []
    for _ in range(n):
        socks.append(await connect(f"{url}/ws/{stream}", max_size=2**22, compression=None,
                                   ping_interval=None, open_timeout=30))
    tasks = [asyncio.ensure_future(one(i, ws)) for i, ws in enumerate(socks)]
    Path(ready_file).write_text("ready")
    t0 = time.perf_counter()
    base = sum(counts)
    await asyncio.sleep(seconds)
    total = sum(counts) - base
    el = time.perf_counter() - t0
    for t in tasks:
        t.cancel()
    with contextlib.suppress(Exception):  # closing handshakes must not hold the figures
        await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in socks),
                                              return_exceptions=True), 5)
    lat.sort()
    return {"subscribers": n, "seconds": round(el, 2), "messages": total,
            "messages_per_s": round(total / el), "per_subscriber_min": min(counts),
            "per_subscriber_max": max(counts), "disconnected": closed,
            "latency_p50_ms": round(pct([x / 1000 for x in lat], 0.5), 1),
            "latency_p99_ms": round(pct([x / 1000 for x in lat], 0.99), 1)}


# ------------------------------------------------------------------ order driver

async def drive(url: str, creds: list[tuple[str, str]], rate: float, seconds: float,
                seed: int) -> dict[str, Any]:
    socks = [await ws_connect(url + "/v1/ws", *c) for c in creds]
    lat: list[float] = []
    due_of: dict[int, float] = {}
    n = int(rate * seconds)
    done = asyncio.Event()

    async def reader(ws: Any) -> None:
        while True:
            raw = await ws.recv(decode=False)
            i = raw.find(b'"id":')
            rid = int(raw[i + 5:raw.find(b",", i)])
            lat.append(time.perf_counter() - due_of.pop(rid))
            if len(lat) == n:
                done.set()

    readers = [asyncio.ensure_future(reader(ws)) for ws in socks]
    gen = OrderGen(seed)  # fresh client order ids per phase (a repeat places nothing)
    t0 = time.perf_counter()
    for k in range(n):
        due = t0 + k / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        due_of[k + 1] = due
        await socks[k % len(socks)].send(_ws_msg(k + 1, gen.body()), text=True)
    await asyncio.wait_for(done.wait(), 120)
    el = time.perf_counter() - t0
    for r in readers:
        r.cancel()
    for ws in socks:
        await ws.close()
    lat.sort()
    return {"orders": n, "orders_per_s": round(n / el), "ack_p50_ms": round(pct(lat, 0.5), 2),
            "ack_p99_ms": round(pct(lat, 0.99), 2)}


# ------------------------------------------------------------------ orchestration

def start(data: Path, port: int) -> tuple[subprocess.Popen[bytes], Path]:
    import httpx

    log = data.parent / "server.log"
    env = dict(os.environ)
    env.update({"BASTION_DATA": str(data), "BASTION_HTTP_PORT": str(port),
                "BASTION_ADMIN_TOKEN": ADMIN, "BASTION_DEMO_KEY": KEY,
                "BASTION_DEMO_SECRET": SECRET, "BASTION_RATE_KEY": "0", "BASTION_RATE_IP": "0",
                "BASTION_WS_PER_IP": "5000", "BASTION_HEALTH_INTERVAL": "1"})
    proc = subprocess.Popen([sys.executable, "-c", "from bastion.cli.main import app; app()",
                             "run"], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(log, "wb"), preexec_fn=raise_nofile)  # noqa: SIM115
    for _ in range(400):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/time", timeout=0.5).status_code == 200:
                return proc, log
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start: " + log.read_text())


def loop_lag(log: Path, since: int) -> tuple[float, float, int]:
    """(median, max) of the health lines' ``loop_lag_max_ms`` after byte offset ``since``."""
    text = log.read_bytes()[since:].decode(errors="replace")
    lags = sorted(float(x) for x in re.findall(r"loop_lag_max_ms=([\d.]+)", text))
    if not lags:
        return float("nan"), float("nan"), len(text)
    return lags[len(lags) // 2], lags[-1], len(text)


def phase(base: str, ws: str, creds: list[tuple[str, str]], subs: int, rate: float,
          seconds: float, log: Path, tmp: Path, stream: str) -> dict[str, Any]:
    ready = tmp / f"ready-{subs}"
    proc = None
    if subs:
        proc = subprocess.Popen([sys.executable, __file__, "--subscriber", ws, str(subs),
                                 str(seconds + 1.0), str(ready), stream],
                                stdout=subprocess.PIPE,
                                preexec_fn=raise_nofile)
        deadline = time.monotonic() + 120
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("subscribers did not connect")
            time.sleep(0.05)
        time.sleep(0.5)
    offset = log.stat().st_size
    orders = asyncio.run(drive(ws, creds, rate, seconds, seed=1000 + subs))
    lag_med, lag_max, _ = loop_lag(log, offset)
    out: dict[str, Any] = {"subscribers": subs, **orders, "loop_lag_median_ms": lag_med,
                           "loop_lag_max_ms": lag_max}
    if proc is not None:
        stdout, _ = proc.communicate(timeout=180)
        out["delivery"] = json.loads(stdout.decode().strip().splitlines()[-1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subs", type=int, nargs="+", default=[0, 100, 1000])
    ap.add_argument("--rate", type=float, default=1000.0, help="orders/s while measuring")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--stream", default=STREAM, help="stream every subscriber opens")
    ap.add_argument("--subscriber", nargs=5, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.subscriber:
        url, n, secs, ready, stream = a.subscriber
        print(json.dumps(asyncio.run(subscribe(url, int(n), float(secs), ready, stream))))
        return
    raise_nofile()
    tmp = Path(tempfile.mkdtemp(prefix="bastion-fanout-"))
    port = free_port()
    proc, log = start(tmp / "data", port)
    base, ws = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
    results = []
    try:
        creds = [(KEY, SECRET), second_key(base, ADMIN)]
        for subs in a.subs:
            r = phase(base, ws, creds, subs, a.rate, a.seconds, log, tmp, a.stream)
            results.append(r)
            if not a.json:
                d = r.get("delivery", {})
                print(f"{subs:>5} subscribers: {r['orders_per_s']:>6} orders/s, ack p50 "
                      f"{r['ack_p50_ms']} ms p99 {r['ack_p99_ms']} ms, loop lag median "
                      f"{r['loop_lag_median_ms']} ms max {r['loop_lag_max_ms']} ms"
                      + (f"; delivered {d['messages_per_s']:,} msg/s "
                         f"({d['per_subscriber_min']}-{d['per_subscriber_max']} per "
                         f"subscriber, {d['disconnected']} dropped), delivery latency p50 "
                         f"{d['latency_p50_ms']} ms p99 {d['latency_p99_ms']} ms" if d else ""),
                      flush=True)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    base_r = results[0]
    for r in results[1:]:
        r["ack_p99_vs_baseline"] = round(r["ack_p99_ms"] / base_r["ack_p99_ms"], 2) \
            if base_r["ack_p99_ms"] else None
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    if a.json:
        print(json.dumps({"bench": "ws_fanout", "machine": machine, "phases": results}))
    else:
        print(json.dumps({"machine": machine}))


if __name__ == "__main__":
    main()
