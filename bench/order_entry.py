"""What each order-entry surface costs on its own: CPU per order of parsing, authenticating,
building the command and rendering the answer, native ``POST /v1/orders`` vs Binance
``POST /api/v3/order`` (no node, no sockets).

    python bench/order_entry.py                                  # this tree
    python bench/order_entry.py --baseline-src /tmp/base/src     # before/after, same run

``bench/gateway.py`` measures the whole loop (client, HTTP, journal, engine) and on a shared
2-core machine moves by 25% between rounds; this isolates the part the surfaces differ in,
timed with the thread's own CPU clock, collector off, best of ``--rounds``. The same functions
the bare order-entry handlers (``api.service.fastpath``) call, in the same order; each request
is signed beforehand (a signature is accepted once) and the answer renders one placed order.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

KEY, SECRET = b"bench-key-1", b"bench-secret-1"
STAGES = ("parse", "auth", "command", "render")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def native_request(i: int, tag: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    side = b"buy" if i % 2 else b"sell"
    price = 50_000 - i % 200 if i % 2 else 50_000 + i % 200
    body = (b'{"market":"BTC-USDT","side":"%s","quantity":"0.001","price":"%d",'
            b'"client_order_id":"%s-%d"}' % (side, price, tag, i))
    ts = str(_now_ms()).encode()
    sig = hmac.new(SECRET, ts + b"POST/v1/orders" + body, hashlib.sha256).hexdigest().encode()
    return [(b"content-type", b"application/json"), (b"x-bx-apikey", KEY),
            (b"x-bx-timestamp", ts), (b"x-bx-signature", sig)], body


def binance_request(i: int, tag: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    side = b"BUY" if i % 2 else b"SELL"
    price = 50_000 - i % 200 if i % 2 else 50_000 + i % 200
    params = (b"symbol=BTCUSDT&side=%s&type=LIMIT&timeInForce=GTC&quantity=0.001&price=%d&"
              b"newClientOrderId=%s-%d&timestamp=%d" % (side, price, tag, i, _now_ms()))
    sig = hmac.new(SECRET, params, hashlib.sha256).hexdigest().encode()
    return [(b"content-type", b"application/x-www-form-urlencoded"),
            (b"x-mbx-apikey", KEY)], params + b"&signature=" + sig


def measure(ctx: Any, placed: Any, surface: str, n: int, tag: bytes) -> list[float]:
    """CPU ns per stage, summed over ``n`` requests of one surface."""
    from bastion.api.binance import rest as B
    from bastion.api.http import authenticate_scope, decode, encode
    from bastion.api.native import schemas as S
    from bastion.api.native import views as V
    from bastion.api.native.routes import place_command
    from bastion.api.service.fastpath import binance_api_key, native_auth_headers

    gw = ctx.gateway
    make = native_request if surface == "native" else binance_request
    reqs = [make(i, tag) for i in range(n)]
    clock = time.thread_time_ns
    acc = [0, 0, 0, 0]
    gc.collect()
    gc.disable()
    try:
        for headers, body in reqs:
            t0 = clock()
            if surface == "native":
                key_id, ts, sig, window = native_auth_headers(headers)
                req = decode(body, S.PlaceOrder)
                t1 = clock()
                scope = {"method": "POST", "path": "/v1/orders", "raw_path": b"/v1/orders",
                         "query_string": b""}
                key = authenticate_scope(ctx, scope, key_id, ts, sig, window, body, "trade")
                t2 = clock()
                place_command(gw.engine, key.account, req)
                t3 = clock()
                encode(V.order(V.units(gw.engine, placed.order.market), placed.order))
            else:
                p = B.parse_params(b"", body)
                api_key = binance_api_key(headers)
                t1 = clock()
                key = B.verify(ctx, api_key, "POST", "/api/v3/order", b"", body, p, "trade")
                t2 = clock()
                m = B.order_command(gw, key, p, False)[0]
                t3 = clock()
                B.encode(B.order_json(V.market_units(gw.engine, m), m, placed.order, False,
                                      placed.trades(), engine=gw.engine))
            t4 = clock()
            acc[0] += t1 - t0
            acc[1] += t2 - t1
            acc[2] += t3 - t2
            acc[3] += t4 - t3
    finally:
        gc.enable()
    return [float(x) for x in acc]


async def _run(n: int, rounds: int) -> dict[str, Any]:
    from bastion.api.app import build
    from bastion.api.config import Settings
    from bastion.core import commands as C

    settings = Settings.from_env()
    app = build(settings)
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    inbox.put_nowait({"type": "lifespan.startup"})

    async def send(msg: dict[str, Any]) -> None:
        await outbox.put(msg)

    life = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"},
                                      "state": {}}, inbox.get, send))
    started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        raise RuntimeError(started.get("message", "startup failed"))
    try:
        ctx = app.state.guard.fast["ctx"]
        placed = await ctx.gateway.place(C.PlaceOrder(
            account=1, market="BTC-USDT", side="buy", qty=100_000, price=4_000_000,
            order_type="limit", tif="GTC", client_id="bench-render"))
        best: dict[str, list[float]] = {}
        for r in range(rounds):
            for surface in ("native", "binance"):
                stages = measure(ctx, placed, surface, n, b"r%d%s" % (r, surface.encode()))
                us = [s / n / 1000 for s in stages]
                if surface not in best or sum(us) < sum(best[surface]):
                    best[surface] = us
        return {s: {"us_per_order": round(sum(v), 2),
                    **{k: round(x, 2) for k, x in zip(STAGES, v, strict=True)}}
                for s, v in best.items()}
    finally:
        inbox.put_nowait({"type": "lifespan.shutdown"})
        await outbox.get()
        await life


def run_here(n: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bastion-edge-") as tmp:
        os.environ.update({"BASTION_DATA": str(Path(tmp) / "data"),
                           "BASTION_DEMO_KEY": KEY.decode(), "BASTION_DEMO_SECRET": SECRET.decode(),
                           "BASTION_ADMIN_TOKEN": "bench-admin", "BASTION_RATE_KEY": "0",
                           "BASTION_RATE_IP": "0", "BASTION_LOG_LEVEL": "warning",
                           "BASTION_DEMO_TRAFFIC": "0"})
        return asyncio.run(_run(n, rounds))


def run_tree(src: str | None, n: int, rounds: int) -> dict[str, Any]:
    """This script in a child process over another source tree (``None``: this one); a tree
    whose fast path does not expose its header scan yet runs its own copy of the script."""
    env = dict(os.environ)
    script = __file__
    if src:
        env["PYTHONPATH"] = src
        fastpath = Path(src) / "bastion" / "api" / "service" / "fastpath.py"
        if "def native_auth_headers" not in fastpath.read_text():
            script = str(Path(src).parent / "bench" / "order_entry.py")  # a tree from before
    out = subprocess.run([sys.executable, script, "--orders", str(n), "--rounds", str(rounds),
                          "--json"], env=env, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])["surfaces"]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=4000, help="requests per surface and round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--baseline-src", help="also measure this source tree (its src/), "
                    "alternating processes, and print the ratios")
    ap.add_argument("--repeat", type=int, default=3, help="processes per build with "
                    "--baseline-src (best of all)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not args.baseline_src:
        res = run_here(args.orders, args.rounds)
        if not args.json:
            for s, v in res.items():
                print(f"{s:>8}: {v['us_per_order']:6.2f} us/order  " + "  ".join(
                    f"{k} {v[k]:.2f}" for k in STAGES))
        print(json.dumps({"bench": "order_entry", "python": sys.version.split()[0],
                          "surfaces": res}))
        return
    best: dict[str, dict[str, dict[str, float]]] = {"baseline": {}, "candidate": {}}
    for i in range(args.repeat):
        for build, src in (("baseline", args.baseline_src), ("candidate", None)):
            res = run_tree(src, args.orders, args.rounds)
            print(f"{build:>9} {i + 1}: " + "  ".join(
                f"{s} {v['us_per_order']:.2f}" for s, v in res.items()), flush=True)
            for s, v in res.items():
                if s not in best[build] or v["us_per_order"] < best[build][s]["us_per_order"]:
                    best[build][s] = v
    for s in ("native", "binance"):
        b, c = best["baseline"][s], best["candidate"][s]
        print(f"{s:>8}: baseline {b['us_per_order']:.2f} us, candidate {c['us_per_order']:.2f} "
              f"us ({c['us_per_order'] / b['us_per_order']:.3f}x); stages " + ", ".join(
                  f"{k} {b[k]:.2f}->{c[k]:.2f}" for k in STAGES))
    for build in ("baseline", "candidate"):
        v = best[build]
        print(f"{build:>9}: Binance edge - native edge = "
              f"{v['binance']['us_per_order'] - v['native']['us_per_order']:+.2f} us/order")
    print(json.dumps({"bench": "order_entry-compare", "best": best}))


if __name__ == "__main__":
    main()
