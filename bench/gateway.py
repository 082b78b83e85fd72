"""Gateway load generator: orders/s and acknowledgement latency over REST and WebSocket.

    python bench/gateway.py                      # starts its own server subprocess
    python bench/gateway.py --json               # one JSON line at the end
    python bench/gateway.py --url http://127.0.0.1:8080 --key K --secret S --admin TOKEN
    python bench/gateway.py --baseline-src /tmp/base/src --rounds 3   # before/after, same run

Runs in its own process against a real server on loopback; every acknowledgement is durable
(the server answers only after the node journaled the order with fdatasync). Phases:
1. REST max throughput (native ``POST /v1/orders``): ``--conns`` keep-alive connections, one
   request in flight each.
2. Binance route max throughput (``POST /api/v3/order``, HMAC query signature), same load: its
   orders/s is reported beside native as ``binance_vs_native``.
3. REST at a fixed rate, by default HALF the maximum phase 1 just measured (``--rest-rate``
   overrides): open loop, latency measured from each request's *scheduled* send time (no
   coordinated omission). ``--rate-phases`` back-to-back phases of ``--rate-seconds`` each
   (default 3 x 5 s): each phase's p99 is printed, and the phase's figure is the p99 of all
   their samples pooled (none dropped), so one stall neither decides nor hides.
4. WebSocket max throughput: ``--ws-conns`` connections, ``--window`` orders in flight each.
5. WebSocket at a fixed rate, by default half of phase 4's maximum (``--ws-rate`` overrides),
   in ``--rate-phases`` phases like 3.
Orders are limit orders around a mid price from two accounts, so some cross and trade.

Each phase also carries ``server``: what the server's own ``/metrics`` moved by during the
phase (GC pauses by generation, event-loop stalls, group-commit fsync time and batch size,
server-side ack latency), to see where the time goes at half load.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import hmac
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ADMIN = "bench-admin"
KEY, SECRET = "bench-key-1", "bench-secret-1"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def pct(sorted_lat: list[float], q: float) -> float:
    if not sorted_lat:
        return float("nan")
    return sorted_lat[min(len(sorted_lat) - 1, int(len(sorted_lat) * q))] * 1000


def summary(name: str, n_ok: int, n_err: int, seconds: float, lat: list[float],
            service: list[float] | None = None) -> dict[str, Any]:
    """``lat``: acknowledgement latency (from the scheduled send time in fixed-rate phases);
    ``service``: from the moment the request was actually written (excludes client-side
    scheduling delay), reported alongside for fixed-rate phases."""
    lat.sort()
    out = {"phase": name, "orders": n_ok, "errors": n_err, "seconds": round(seconds, 3),
           "orders_per_s": round(n_ok / seconds) if seconds else 0,
           "p50_ms": round(pct(lat, 0.50), 3), "p99_ms": round(pct(lat, 0.99), 3),
           "p999_ms": round(pct(lat, 0.999), 3), "max_ms": round(lat[-1] * 1000, 3) if lat
           else None}
    if service:
        service.sort()
        out.update({"service_p50_ms": round(pct(service, 0.50), 3),
                    "service_p99_ms": round(pct(service, 0.99), 3),
                    "service_p999_ms": round(pct(service, 0.999), 3)})
    out["_samples"] = (lat, service or [])  # for ``pooled``; never printed
    return out


def pooled(name: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One figure for back-to-back fixed-rate phases: percentiles over every sample of every
    phase (nothing dropped), each phase's own p99 kept in ``parts``."""
    lat: list[float] = []
    service: list[float] = []
    for part in parts:
        part_lat, part_service = part.pop("_samples")
        lat += part_lat
        service += part_service
    out = summary(name, sum(p["orders"] for p in parts), sum(p["errors"] for p in parts),
                  sum(p["seconds"] for p in parts), lat, service)
    del out["_samples"]
    lags = [p["generator_lag_max_ms"] for p in parts if p.get("generator_lag_max_ms") is not None]
    if lags:
        out["generator_lag_p99_ms"] = max(p["generator_lag_p99_ms"] for p in parts)
        out["generator_lag_max_ms"] = max(lags)
    out["parts"] = parts
    return out


class OrderGen:
    """Limit orders around 50,000 from alternating accounts; ~1 in 8 crosses the spread."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.i = 0
        self.tag = b"%x%x" % (os.getpid(), seed)

    def body(self) -> bytes:
        self.i += 1
        rng = self.rng
        side = "buy" if self.i % 2 else "sell"
        off = rng.randrange(-25, 200)
        price = 50_000 - off if side == "buy" else 50_000 + off
        return (b'{"market":"BTC-USDT","side":"%s","quantity":"0.001","price":"%d",'
                b'"client_order_id":"%s-%d"}' % (side.encode(), price, self.tag, self.i))


# ------------------------------------------------------------------ REST

class HttpConn:
    def __init__(self, host: str, port: int, key: str, secret: str) -> None:
        self.host, self.port = host, port
        self.key = key.encode()
        self.secret = secret.encode()

    async def open(self) -> None:
        self.r, self.w = await asyncio.open_connection(self.host, self.port)
        sock = self.w.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def post_order(self, body: bytes) -> int:
        ts = str(now_ms()).encode()
        sig = hmac.new(self.secret, ts + b"POST/v1/orders" + body, hashlib.sha256).hexdigest()
        self.w.write(b"POST /v1/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"X-BX-APIKEY: %s\r\nX-BX-TIMESTAMP: %s\r\nX-BX-SIGNATURE: %s\r\n"
                     b"Content-Length: %d\r\n\r\n%s"
                     % (self.key, ts, sig.encode(), len(body), body))
        head = await self.r.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        i = head.lower().find(b"content-length:")
        n = int(head[i + 15:head.find(b"\r\n", i)])
        await self.r.readexactly(n)
        return status

    def close(self) -> None:
        self.w.close()


class BinanceConn(HttpConn):
    """The Binance spot route: form parameters signed with HMAC-SHA256, key in a header.

    Signs exactly what ccxt signs (the url-encoded parameters, ``&signature=`` + hex HMAC
    appended), but builds the form straight from the fields of ``OrderGen``'s fixed body layout
    with one split and one format: re-reading that body as JSON cost this client ~4 us more
    per order than the native one, CPU the server shares on a 2-core machine.
    """

    _SIDE = {b"buy": b"BUY", b"sell": b"SELL"}

    async def post_order(self, body: bytes) -> int:
        f = body.split(b'"', 20)  # 7: side, 11: quantity, 15: price, 19: client order id
        params = (b"symbol=BTCUSDT&side=%s&type=LIMIT&timeInForce=GTC&quantity=%s&price=%s&"
                  b"newClientOrderId=%s&timestamp=%d"
                  % (self._SIDE[f[7]], f[11], f[15], f[19], now_ms()))
        sig = hmac.new(self.secret, params, hashlib.sha256).hexdigest().encode()
        self.w.write(b"POST /api/v3/order HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n"
                     b"X-MBX-APIKEY: %s\r\nContent-Length: %d\r\n\r\n%s&signature=%s"
                     % (self.key, len(params) + 75, params, sig))
        head = await self.r.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        i = head.lower().find(b"content-length:")
        n = int(head[i + 15:head.find(b"\r\n", i)])
        await self.r.readexactly(n)
        return status


async def rest_max(host: str, port: int, creds: list[tuple[str, str]], conns: int,
                   total: int, conn_type: type[HttpConn] = HttpConn,
                   name: str = "rest_max", seed0: int = 0) -> dict[str, Any]:
    """Closed loop; ``seed0`` keeps each phase's client order ids distinct (a repeated id is
    answered as a duplicate without placing anything)."""
    pool = [conn_type(host, port, *creds[i % len(creds)]) for i in range(conns)]
    await asyncio.gather(*(c.open() for c in pool))
    lat: list[float] = []
    errs = 0
    per = total // conns

    async def worker(c: HttpConn, seed: int) -> None:
        nonlocal errs
        gen = OrderGen(seed)
        pc = time.perf_counter
        for _ in range(per):
            body = gen.body()
            t = pc()
            st = await c.post_order(body)
            lat.append(pc() - t)
            if st >= 300:
                errs += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c, seed0 + i) for i, c in enumerate(pool)))
    el = time.perf_counter() - t0
    for c in pool:
        c.close()
    return summary(name, len(lat) - errs, errs, el, lat)


class GenLag:
    """The load generator's own event-loop lateness (a 1 ms ticker) during a fixed-rate
    phase: a late generator sends late and reads replies late, which shows in the latency
    "from due time" without being the server's. Reported beside the latencies, so a slow
    generator is seen rather than hidden."""

    def __init__(self) -> None:
        self.late: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        pc = time.perf_counter
        while True:
            t = pc()
            await asyncio.sleep(0.001)
            self.late.append(max(0.0, pc() - t - 0.001))

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def stop(self, out: dict[str, Any]) -> dict[str, Any]:
        if self._task is not None:
            self._task.cancel()
        late = sorted(self.late)
        out["generator_lag_p99_ms"] = round(pct(late, 0.99), 3)
        out["generator_lag_max_ms"] = round(late[-1] * 1000, 3) if late else None
        return out


#: order generator seeds of the fixed-rate phases (phase i uses base + i): distinct from each
#: other and from the maximum phases' (REST 0.., Binance 500.., WebSocket 1000..), since a
#: client order id sent again is answered from the read model as a duplicate, placing nothing
REST_RATE_SEED, WS_RATE_SEED = 2000, 3000


async def rest_rate(host: str, port: int, creds: list[tuple[str, str]], rate: float,
                    seconds: float, conns: int, seed: int = REST_RATE_SEED) -> dict[str, Any]:
    """Open loop: request k is due at t0 + k/rate; latency counts from the due time. The
    bodies are made before the clock starts (only the signature, which covers a timestamp,
    is made at send time)."""
    pool = [HttpConn(host, port, *creds[i % len(creds)]) for i in range(conns)]
    await asyncio.gather(*(c.open() for c in pool))
    free: asyncio.Queue[HttpConn] = asyncio.Queue()
    for c in pool:
        free.put_nowait(c)
    lat: list[float] = []
    errs = 0
    n = int(rate * seconds)
    gen = OrderGen(seed)
    bodies = [gen.body() for _ in range(n)]
    tasks = []
    probe = GenLag()

    service: list[float] = []
    timeline: list[tuple[bytes, float, float, float]] = []

    async def one(due: float, body: bytes) -> None:
        nonlocal errs
        c = await free.get()
        sent = time.perf_counter()
        st = await c.post_order(body)
        done = time.perf_counter()
        lat.append(done - due)
        service.append(done - sent)
        timeline.append((body, due, sent, done))
        if st >= 300:
            errs += 1
        free.put_nowait(c)

    probe.start()
    t0 = time.perf_counter()
    for k in range(n):
        due = t0 + k / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(due, bodies[k])))
    await asyncio.gather(*tasks)
    el = time.perf_counter() - t0
    for c in pool:
        c.close()
    out = probe.stop(summary("rest_rate", len(lat) - errs, errs, el, lat, service))
    out["_timeline"] = timeline
    return out


# ------------------------------------------------------------------ WebSocket

async def ws_connect(url: str, key: str, secret: str) -> Any:
    from websockets.asyncio.client import connect

    ws = await connect(url, max_size=2**20, compression=None, ping_interval=None)
    ts = str(now_ms())
    sig = hmac.new(secret.encode(), f"{ts}GET/v1/ws".encode(), hashlib.sha256).hexdigest()
    await ws.send(json.dumps({"op": "auth", "id": 0, "key": key, "timestamp": ts,
                              "signature": sig}))
    reply = json.loads(await ws.recv())
    if not reply.get("ok"):
        raise RuntimeError(f"ws auth failed: {reply}")
    return ws


def _ws_msg(rid: int, body: bytes) -> bytes:
    return b'{"op":"place","id":%d,"args":%s}' % (rid, body)


async def ws_max(url: str, creds: list[tuple[str, str]], conns: int, window: int,
                 total: int) -> dict[str, Any]:
    socks = [await ws_connect(url, *creds[i % len(creds)]) for i in range(conns)]
    lat: list[float] = []
    errs = 0
    per = total // conns

    async def worker(ws: Any, seed: int) -> None:
        nonlocal errs
        gen = OrderGen(seed)
        sent: dict[int, float] = {}
        pc = time.perf_counter
        credit = asyncio.Semaphore(window)

        async def reader() -> None:
            nonlocal errs
            got = 0
            while got < per:
                raw = await ws.recv(decode=False)
                i = raw.find(b'"id":')
                j = raw.find(b",", i)
                rid = int(raw[i + 5:j])
                lat.append(pc() - sent.pop(rid))
                if b'"ok":true' not in raw[:j + 12]:
                    errs += 1
                got += 1
                credit.release()

        rt = asyncio.ensure_future(reader())
        for rid in range(1, per + 1):
            await credit.acquire()
            sent[rid] = pc()
            await ws.send(_ws_msg(rid, gen.body()), text=True)
        await rt

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(ws, 1000 + i) for i, ws in enumerate(socks)))
    el = time.perf_counter() - t0
    for ws in socks:
        await ws.close()
    return summary("ws_max", len(lat) - errs, errs, el, lat)


async def ws_rate(url: str, creds: list[tuple[str, str]], rate: float, seconds: float,
                  conns: int, seed: int = WS_RATE_SEED) -> dict[str, Any]:
    socks = [await ws_connect(url, *creds[i % len(creds)]) for i in range(conns)]
    lat: list[float] = []
    errs = 0
    n = int(rate * seconds)
    due_of: dict[int, tuple[float, float]] = {}
    service: list[float] = []
    timeline: list[tuple[bytes, float, float, float]] = []
    done = asyncio.Event()
    received = 0

    async def reader(ws: Any) -> None:
        nonlocal errs, received
        while True:
            raw = await ws.recv(decode=False)
            i = raw.find(b'"id":')
            j = raw.find(b",", i)
            rid = int(raw[i + 5:j])
            due, sent = due_of.pop(rid)
            now = time.perf_counter()
            lat.append(now - due)
            service.append(now - sent)
            timeline.append((bodies[rid - 1], due, sent, now))
            if b'"ok":true' not in raw[:j + 12]:
                errs += 1
                if errs == 1:
                    print("first error:", raw[:300].decode(errors="replace"), file=sys.stderr)
            received += 1
            if received == n:
                done.set()

    readers = [asyncio.ensure_future(reader(ws)) for ws in socks]
    gen = OrderGen(seed)
    bodies = [gen.body() for _ in range(n)]
    frames = [_ws_msg(k + 1, body) for k, body in enumerate(bodies)]  # before the clock starts
    probe = GenLag()
    probe.start()
    t0 = time.perf_counter()
    for k in range(n):
        due = t0 + k / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        due_of[k + 1] = (due, time.perf_counter())
        await socks[k % conns].send(frames[k], text=True)
    await asyncio.wait_for(done.wait(), 60)
    el = time.perf_counter() - t0
    for r in readers:
        r.cancel()
    for ws in socks:
        await ws.close()
    out = probe.stop(summary("ws_rate", len(lat) - errs, errs, el, lat, service))
    out["_timeline"] = timeline
    return out


# ------------------------------------------------------------------ where the time goes

Sample = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base: str) -> Sample:
    """Every sample of the server's ``/metrics`` (name + labels -> value)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(base + "/metrics", timeout=10).text
    out: Sample = {}
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            out[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value
    return out


def _hist(delta: Sample, name: str, **match: str) -> tuple[float, float, list[tuple[float, float]]]:
    """``(count, sum, [(le, cumulative count)])`` of one histogram's change, summed over the
    label sets that carry ``match``."""
    count = total = 0.0
    buckets: dict[float, float] = {}
    for (n, labels), v in delta.items():
        lab = dict(labels)
        if any(lab.get(k) != want for k, want in match.items()):
            continue
        if n == name + "_count":
            count += v
        elif n == name + "_sum":
            total += v
        elif n == name + "_bucket":
            le = float(lab["le"])
            buckets[le] = buckets.get(le, 0.0) + v
    return count, total, sorted(buckets.items())


def _quantile(buckets: list[tuple[float, float]], count: float, q: float) -> float | None:
    """Upper bound of the bucket holding quantile ``q`` (seconds), from cumulative counts."""
    if not count:
        return None
    for le, cum in buckets:
        if cum >= q * count:
            return le
    return None


def _over(buckets: list[tuple[float, float]], count: float, bound: float) -> float:
    """How many observations were above ``bound`` (a bucket bound)."""
    below = next((cum for le, cum in buckets if le >= bound), count)
    return count - below


def server_breakdown(before: Sample, after: Sample, seconds: float,
                     orders: int) -> dict[str, Any]:
    """What the server's own meters say about one phase: time in GC (per generation), the
    event loop's stalls, the group commit (fsync time, records per batch) and its own ack
    latency. Stall/GC figures are shares of the phase's wall time on the loop's thread."""
    delta: Sample = {k: v - before.get(k, 0.0) for k, v in after.items()}
    ms = 1000.0
    out: dict[str, Any] = {}
    gc_total = 0.0
    for gen in ("0", "1", "2"):
        n, t, b = _hist(delta, "bastion_gc_pause_seconds", generation=gen)
        gc_total += t
        out[f"gc{gen}"] = {"collections": int(n), "pause_ms_total": round(t * ms, 1),
                           "pause_ms_mean": round(t / n * ms, 3) if n else None,
                           "over_5ms": int(_over(b, n, 0.005))}
    out["gc_share_of_wall"] = round(gc_total / seconds, 4) if seconds else None
    n, t, b = _hist(delta, "bastion_event_loop_lag_seconds")
    out["loop_lag"] = {"ticks": int(n), "late_ms_total": round(t * ms, 1),
                       "p99_ms_le": _ms(_quantile(b, n, 0.99)),
                       "over_10ms": int(_over(b, n, 0.01)), "over_50ms": int(_over(b, n, 0.05)),
                       "share_of_wall": round(t / seconds, 4) if seconds else None}
    n, t, b = _hist(delta, "bastion_journal_fsync_seconds")
    bn, bt, _ = _hist(delta, "bastion_journal_batch_records")
    out["group_commit"] = {"batches": int(n), "fsync_ms_mean": round(t / n * ms, 3) if n
                           else None, "fsync_p99_ms_le": _ms(_quantile(b, n, 0.99)),
                           "records_per_batch": round(bt / bn, 1) if bn else None,
                           "busy_share_of_wall": round(t / seconds, 4) if seconds else None}
    n, t, b = _hist(delta, "bastion_ack_seconds")
    out["ack"] = {"count": int(n), "mean_ms": round(t / n * ms, 3) if n else None,
                  "p50_ms_le": _ms(_quantile(b, n, 0.5)), "p99_ms_le": _ms(_quantile(b, n, 0.99))}
    forks: dict[str, Any] = {}
    for (n, labels), v in delta.items():
        if n == "bastion_forks_total" and v:
            kind = dict(labels)["kind"]
            last = after.get(("bastion_fork_pause_last_seconds", labels), 0.0)
            forks[kind] = {"count": int(v), "last_pause_ms": round(last * ms, 1)}
    out["forks"] = forks
    out["orders"] = orders
    return out


def _forks(srv: dict[str, Any]) -> str:
    """``; forks: readmodel 1 (last 6.4 ms)``: snapshot and checkpoint forks inside a phase
    (each stops the loop for a few ms), empty when there were none."""
    forks = srv.get("forks") or {}
    return "".join(f"; fork {kind} x{f['count']} (last {f['last_pause_ms']} ms)"
                   for kind, f in sorted(forks.items()))


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 3)


# ------------------------------------------------------------------ orchestration

def _try_scrape(base: str) -> Sample | None:
    """``None`` when the server has no ``/metrics`` (an older baseline build)."""
    try:
        return scrape(base)
    except Exception:
        return None


def headline(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures the targets are stated in: max orders/s per route, Binance vs native, and
    the ack p99 at the fixed (half-of-max) rates."""
    by = {r["phase"]: r for r in results}
    out: dict[str, Any] = {}
    for name in ("rest_max", "binance_max", "ws_max"):
        if name in by:
            out[name + "_per_s"] = by[name]["orders_per_s"]
    if "binance_max" in by:
        out["binance_vs_native"] = by["binance_max"].get("binance_vs_native")
    for name in ("rest_rate", "ws_rate"):
        if name in by:
            out[name + "_target"] = by[name].get("target_rate")
            out[name + "_p99_ms"] = by[name]["p99_ms"]
            if by[name].get("parts"):
                out[name + "_phase_p99s_ms"] = [p["p99_ms"] for p in by[name]["parts"]]
            out[name + "_service_p99_ms"] = by[name].get("service_p99_ms")
            share = by[name].get("cpu_share")
            if share:
                out[name + "_loop_busy"] = share["loop_thread"]
    return out


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of a process: the scheduler's run time
    (``/proc/.../schedstat``, in ns), else the tick-sampled user + system times."""
    out: dict[int, float] = {}
    tck = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        task = Path(f"/proc/{pid}/task/{tid}")
        try:
            out[int(tid)] = int((task / "schedstat").read_text().split()[0]) / 1e9
        except (FileNotFoundError, ProcessLookupError):
            continue
        except (OSError, ValueError, IndexError):  # no schedstat: tick-sampled times
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out[int(tid)] = (int(fields[11]) + int(fields[12])) / tck
    return out


def busy(pid: int, before: dict[int, float], after: dict[int, float], gen0: float,
         seconds: float) -> dict[str, Any]:
    """Shares of one core over a phase: the server's event-loop thread (its main thread),
    its other threads (journal writer, executors), this load generator, and the machine's
    load average. A loop thread near 100% at the fixed rate means the latency is queueing for
    the loop, whatever else is measured."""
    loop = after.get(pid, 0.0) - before.get(pid, 0.0)
    other = sum(v - before.get(t, 0.0) for t, v in after.items() if t != pid)
    gen = time.process_time() - gen0
    return {"loop_thread": round(loop / seconds, 3), "other_threads": round(other / seconds, 3),
            "generator": round(gen / seconds, 3), "load_avg_1m": round(os.getloadavg()[0], 2)}


def preemptions(pid: int) -> int:
    """Times the server's event-loop thread was switched out while runnable (involuntary
    context switches): on a pinned server, mostly its own journal writer waking up."""
    for line in Path(f"/proc/{pid}/task/{pid}/status").read_text().splitlines():
        if line.startswith("nonvoluntary_ctxt_switches:"):
            return int(line.split()[1])
    return 0


def switches(pid: int) -> dict[str, list[int]]:
    """Voluntary and involuntary context switches of the server's event-loop thread (its main
    thread) and of its other threads together (mostly the journal writer): a thread woken
    once per submit instead of once per batch shows here, per order and per batch."""
    out = {"loop": [0, 0], "others": [0, 0]}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            text = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        into = out["loop"] if int(tid) == pid else out["others"]
        for line in text.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                into[0] += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                into[1] += int(line.split()[1])
    return out


def major_faults(pid: int | None = None) -> int:
    """Page faults that had to read from disk, of a process (default: this one). This VM's
    proactive reclaim (DAMON ``pageout``) evicts file pages idle for seconds, such as code
    not run lately; touching one again is a disk read, a stall of tens to hundreds of ms on a
    busy disk. Counted per phase on both sides, so such a stall is attributed, not guessed."""
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_majflt
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[9])


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (Linux ``/proc``): the server's cost per order is
    a fairer before/after figure than throughput on a machine shared with other load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: (server CPUs, load-generator CPUs) with ``--pin``: the server and its load generator do
#: not take turns on one core (in production the clients are other machines)
PIN: tuple[set[int], set[int]] | None = None


def pin_split() -> tuple[set[int], set[int]] | None:
    """The last CPU this process may use for the server, the others for the generator;
    ``None`` with fewer than two."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return {cpus[-1]}, set(cpus[:-1])


def start_server(data: Path, port: int, src: str | None = None,
                 extra_env: dict[str, str] | None = None,
                 python: str | None = None) -> subprocess.Popen[bytes]:
    """``src``: run the server from another source tree (a baseline checkout's ``src``);
    ``extra_env``: settings of this server only (``--candidate-env``); ``python``: another
    venv's interpreter (``--baseline-python``), so a baseline runs its own compiled core."""
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    env.update({"BASTION_DATA": str(data), "BASTION_HTTP_PORT": str(port),
                "BASTION_ADMIN_TOKEN": ADMIN, "BASTION_DEMO_KEY": KEY,
                "BASTION_DEMO_SECRET": SECRET, "BASTION_RATE_KEY": "0", "BASTION_RATE_IP": "0",
                "BASTION_LOG_LEVEL": "warning", "BASTION_DEMO_TRAFFIC": "0"})
    env.update(extra_env or {})
    server_cpus = PIN[0] if PIN is not None else None
    proc = subprocess.Popen([python or sys.executable, "-c",
                             "from bastion.cli.main import app; app()",
                             "run"], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(data.parent / "server.log", "wb"),  # noqa: SIM115
                            preexec_fn=(lambda: os.sched_setaffinity(0, server_cpus))
                            if server_cpus else None)
    import httpx

    for _ in range(400):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/time", timeout=0.5).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start: " + (data.parent / "server.log").read_text())


def second_key(base: str, admin: str) -> tuple[str, str]:
    """A key for demo account 2, and enough funds in accounts 1 and 2 that resting orders
    never run out of balance, however many the run places."""
    import httpx

    for account in (1, 2):
        for asset, amount in (("USDT", "100000000"), ("BTC", "10000")):
            httpx.post(base + "/admin/deposits", headers={"authorization": f"Bearer {admin}"},
                       json={"account": account, "asset": asset, "amount": amount,
                             "reason": "bench funds"}).raise_for_status()
    r = httpx.post(base + "/admin/keys", json={"account": 2, "permissions": ["read", "trade"]},
                   headers={"authorization": f"Bearer {admin}"})
    r.raise_for_status()
    return r.json()["key"], r.json()["secret"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="use a running server (default: start one)")
    ap.add_argument("--key", default=KEY)
    ap.add_argument("--secret", default=SECRET)
    ap.add_argument("--admin", default=ADMIN)
    ap.add_argument("--rest-orders", type=int, default=40_000)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--rest-rate", type=float, default=None,
                    help="fixed REST rate (default: half the REST maximum just measured)")
    ap.add_argument("--ws-orders", type=int, default=100_000)
    ap.add_argument("--ws-conns", type=int, default=4)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--ws-rate", type=float, default=None,
                    help="fixed WebSocket rate (default: half the WebSocket maximum just "
                    "measured)")
    ap.add_argument("--rate-seconds", type=float, default=5.0, help="length of each fixed-rate "
                    "phase")
    ap.add_argument("--rate-phases", type=int, default=3, help="back-to-back fixed-rate phases "
                    "per transport, reported each and pooled")
    ap.add_argument("--only", choices=["rest", "ws"], help="run one transport only")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--baseline-src", help="also run a server from this source tree (e.g. a "
                    "checkout of main at the base commit, its src/) and compare, alternating")
    ap.add_argument("--baseline-python", help="run the baseline server with this interpreter "
                    "(another checkout's .venv/bin/python, with its own `make "
                    ".venv/bastion-native/.built`): the baseline then runs its OWN compiled "
                    "core, where --baseline-src alone sends an older core to pure; without "
                    "--baseline-src it runs the source that venv has installed")
    ap.add_argument("--rest-order", choices=["native", "binance", "alternate"],
                    default="native", help="which REST max phase runs first; `alternate` "
                    "flips it every round, so whatever the server does at a fixed point of "
                    "the run (the read model's checkpoint passes) falls in each phase in turn")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per build with --baseline-src "
                    "(or of this build alone with --rest-order alternate)")
    ap.add_argument("--candidate-env", action="append", default=[], metavar="NAME=VALUE",
                    help="environment of the candidate server only (repeatable): A/B a setting "
                    "such as BASTION_SWITCH_INTERVAL against the same tree as --baseline-src")
    ap.add_argument("--pin", action="store_true", help="run the server on the last CPU and this "
                    "load generator on the others (they otherwise take turns on the same cores)")
    ap.add_argument("--trace", action="store_true", help="run the server with its ack stage "
                    "trace on (BASTION_ACK_TRACE) and print, for the slowest 1%% of each "
                    "fixed-rate phase, how their latency splits by stage and which server "
                    "events overlapped them (bench/ack_trace.py); costs the server a little")
    ap.add_argument("--trace-keep", metavar="DIR", help="with --trace: also keep each server's "
                    "trace and the generator's per-order timeline in DIR (for "
                    "`python bench/ack_trace.py TRACE TIMELINE`)")
    ap.add_argument("--mlock", action="store_true", help="lock this generator's pages once "
                    "touched, so reclaim cannot stall it (a server does so with BASTION_MLOCK=1)")
    args = ap.parse_args()
    if args.mlock:
        from bastion.node.memlock import lock_memory

        why = lock_memory()
        print("generator memory:", "locked on fault" if why is None else f"not locked ({why})",
              flush=True)
    if args.pin:
        global PIN
        PIN = pin_split()
        if PIN is not None:
            os.sched_setaffinity(0, PIN[1])
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    # the load generator must not add its own full-collection pauses to measured latency
    gc.set_threshold(700, 10, 1_000_000)
    if args.baseline_src or args.baseline_python:
        compare(args)
        return
    if args.rest_order == "alternate" and args.only != "ws":
        orders_both_ways(args)
        return
    results = run(args, None, binance_first=args.rest_order == "binance")
    head = headline(results)
    if not args.json:
        print("headline:", ", ".join(f"{k} {v}" for k, v in head.items()))
    print(json.dumps({"bench": "gateway", "cpus": os.cpu_count(), "pinned": PIN is not None,
                      "python": sys.version.split()[0], "headline": head,
                      "results": results}))


def orders_both_ways(args: argparse.Namespace) -> None:
    """One build, ``--rounds`` servers, the REST max phases native first in odd rounds and
    Binance first in even ones: Binance vs native per round, and best vs best (each surface's
    best is then one where it ran first, as the other's)."""
    runs = []
    for i in range(args.rounds):
        binance_first = i % 2 == 1
        if not args.json:
            print(f"round {i + 1}: {'binance' if binance_first else 'native'} max first",
                  flush=True)
        results = run(args, None, binance_first=binance_first)
        runs.append({"round": i + 1, "binance_first": binance_first,
                     "headline": headline(results), "results": results})
    best = {name: max(r["headline"].get(name + "_per_s", 0) for r in runs)
            for name in ("rest_max", "binance_max")}
    ratio = round(best["binance_max"] / max(best["rest_max"], 1), 3)
    if not args.json:
        print("binance/native per round: " + ", ".join(
            f"{r['headline']['binance_vs_native']}"
            f"{' (binance first)' if r['binance_first'] else ''}" for r in runs))
        print(f"best vs best: rest_max {best['rest_max']}/s, binance_max "
              f"{best['binance_max']}/s, binance/native {ratio}")
    print(json.dumps({"bench": "gateway-orders", "cpus": os.cpu_count(),
                      "pinned": PIN is not None, "python": sys.version.split()[0],
                      "best": best, "binance_vs_native_best": ratio, "runs": runs}))


def core_kind(src: str | None, python: str | None = None) -> str:
    """Which core a server from ``src`` runs: ``compiled`` only if that tree's core sources
    match this venv's mypyc build, else ``pure`` (slower): a baseline from before a core change
    runs pure, which is not a like-for-like comparison."""
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    out = subprocess.run([python or sys.executable, "-c", "import bastion.corebuild as c; "
                          "print(c.KIND, '-', c.REASON)"], env=env, capture_output=True,
                         text=True, timeout=60)
    return out.stdout.strip() or out.stderr.strip()[-200:]


def compare(args: argparse.Namespace) -> None:
    """Baseline and candidate servers alternately, ``--rounds`` each, same load generator;
    per phase the best throughput of each build and the ratio."""
    kinds = {"baseline": core_kind(args.baseline_src, args.baseline_python),
             "candidate": core_kind(None)}
    if args.candidate_env:
        kinds["candidate_env"] = " ".join(args.candidate_env)
    for build, kind in kinds.items():
        print(f"{build} core: {kind}", flush=True)
    best: dict[str, dict[str, int]] = {"baseline": {}, "candidate": {}}
    cost: dict[str, dict[str, float]] = {"baseline": {}, "candidate": {}}
    p99: dict[str, dict[str, float]] = {"baseline": {}, "candidate": {}}
    runs: list[dict[str, Any]] = []
    for i in range(args.rounds):
        binance_first = (args.rest_order == "binance"
                         or (args.rest_order == "alternate" and i % 2 == 1))
        for build, src in (("baseline", args.baseline_src), ("candidate", None)):
            if args.rest_order == "alternate" and not args.json:
                print(f"round {i + 1} {build}: "
                      f"{'binance' if binance_first else 'native'} max first", flush=True)
            results = run(args, src, candidate_env(args) if build == "candidate" else None,
                          args.baseline_python if build == "baseline" else None,
                          binance_first)
            runs.append({"round": i + 1, "build": build, "headline": headline(results),
                         "binance_first": binance_first, "results": results})
            for r in results:
                if r["phase"].endswith("_rate"):
                    p99[build][r["phase"]] = min(p99[build].get(r["phase"], 1e9), r["p99_ms"])
                prev = best[build].get(r["phase"], 0)
                best[build][r["phase"]] = max(prev, r["orders_per_s"])
                us = r.get("server_cpu_us_per_order", 0.0)
                low = cost[build].get(r["phase"], us)
                cost[build][r["phase"]] = min(low, us)
    print(f"{'phase':>16}  {'baseline/s':>10}  {'candidate/s':>11}  ratio  "
          f"{'base us/order':>13}  {'cand us/order':>13}  ratio")
    for phase, base in best["baseline"].items():
        cand = best["candidate"].get(phase, 0)
        bu, cu = cost["baseline"].get(phase, 0.0), cost["candidate"].get(phase, 0.0)
        print(f"{phase:>16}  {base:>10}  {cand:>11}  {cand / base if base else 0:.3f}  "
              f"{bu:>13}  {cu:>13}  {cu / bu if bu else 0:.3f}")
    for build in ("baseline", "candidate"):
        ratios = [f"{r['headline']['binance_vs_native']}"
                  f"{' (binance first)' if r['binance_first'] else ''}"
                  for r in runs if r["build"] == build
                  and r["headline"].get("binance_vs_native") is not None]
        if ratios:
            print(f"{'binance/native':>16}  {build} per round: {', '.join(ratios)}")
    for phase, base_p99 in p99["baseline"].items():
        print(f"{phase:>16}  best p99 baseline {base_p99:.2f} ms, candidate "
              f"{p99['candidate'].get(phase, float('nan')):.2f} ms (pooled over "
              f"{args.rate_phases} phases, each build at half its own max)")
    print(json.dumps({"bench": "gateway-compare", "cpus": os.cpu_count(), "pinned": PIN is not None,
                      "best": best,
                      "cpu_us_per_order_best": cost, "p99_ms_best": p99, "core": kinds,
                      "runs": runs}))


def trace_report(path: Path, timelines: list[tuple[dict[str, Any], list[Any]]],
                 quiet: bool, keep: str | None = None) -> None:
    """``--trace``: each fixed-rate phase's slowest 1% by stage (``bench/ack_trace.py``),
    printed and kept in the phase's result as ``trace``."""
    import ack_trace

    if not path.exists():
        print("ack trace: the server wrote none (a server without bastion.acktrace?)",
              flush=True)
        return
    trace = ack_trace.Trace(json.loads(path.read_text()))
    if keep:
        out = Path(keep)
        out.mkdir(parents=True, exist_ok=True)
        stem = time.strftime("%H%M%S")
        shutil.copy(path, out / f"{stem}-trace.json")
        for r, parts in timelines:
            (out / f"{stem}-{r['phase']}-timeline.json").write_text(json.dumps(
                [[(body.decode(), *times) for body, *times in part] for part in parts]))
    for r, parts in timelines:
        r["trace"] = [ack_trace.report(trace, part) for part in parts]
        if not quiet:
            for i, rep in enumerate(r["trace"], 1):
                ack_trace.show(r["phase"], i, len(parts), rep)


def candidate_env(args: argparse.Namespace) -> dict[str, str]:
    """``--candidate-env NAME=VALUE`` pairs as a dict."""
    pairs = [item.split("=", 1) for item in args.candidate_env]
    if any(len(p) != 2 or not p[0] for p in pairs):
        raise SystemExit("--candidate-env takes NAME=VALUE")
    return {name: value for name, value in pairs}


def run(args: argparse.Namespace, src: str | None,
        extra_env: dict[str, str] | None = None, python: str | None = None,
        binance_first: bool = False) -> list[dict[str, Any]]:
    tmp = None
    proc = None
    if args.url:
        base = args.url.rstrip("/")
    else:
        tmp = Path(tempfile.mkdtemp(prefix="bastion-bench-"))
        port = free_port()
        if args.trace:
            extra_env = {**(extra_env or {}), "BASTION_ACK_TRACE": str(tmp / "trace.json")}
        proc = start_server(tmp / "data", port, src, extra_env, python)
        base = f"http://127.0.0.1:{port}"
    u = urlparse(base)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    ws_url = f"ws://{host}:{port}/v1/ws"
    results: list[dict[str, Any]] = []
    #: per fixed-rate result, each phase's (body, due, sent, answered) per order (``--trace``)
    timelines: list[tuple[dict[str, Any], list[Any]]] = []
    try:
        creds = [(args.key, args.secret), second_key(base, args.admin)]

        cpu = [cpu_seconds(proc.pid) if proc is not None else 0.0]

        def show(r: dict[str, Any]) -> None:
            gc.collect()
            if proc is not None:
                now = cpu_seconds(proc.pid)
                r["server_cpu_us_per_order"] = round((now - cpu[0]) / max(r["orders"], 1)
                                                     * 1e6, 1)
                cpu[0] = now
            results.append(r)
            if not args.json:
                extra = ""
                if "service_p50_ms" in r:
                    extra = (f"  (from send: p50 {r['service_p50_ms']:.2f} p99 "
                             f"{r['service_p99_ms']:.2f} p99.9 {r['service_p999_ms']:.2f})")
                print(f"{r['phase']:>16}: {r['orders']:>7} orders in {r['seconds']:6.2f} s = "
                      f"{r['orders_per_s']:>6}/s  p50 {r['p50_ms']:.2f} ms  p99 "
                      f"{r['p99_ms']:.2f} ms  p99.9 {r['p999_ms']:.2f} ms  errors "
                      f"{r['errors']}{extra}", flush=True)
                srv = r.get("server")
                if srv:
                    gcs = " ".join(f"gen{g} {srv[f'gc{g}']['collections']}x/"
                                   f"{srv[f'gc{g}']['pause_ms_total']}ms" for g in "012")
                    lag, gcm, ack = srv["loop_lag"], srv["group_commit"], srv["ack"]
                    print(f"{'':>18}server: GC {gcs} ({srv['gc_share_of_wall']:.1%} of wall); "
                          f"loop late {lag['late_ms_total']} ms ({lag['share_of_wall']:.1%}), "
                          f"stalls >10ms {lag['over_10ms']} >50ms {lag['over_50ms']}; "
                          f"fsync mean {gcm['fsync_ms_mean']} ms x {gcm['batches']} batches "
                          f"of {gcm['records_per_batch']} ({gcm['busy_share_of_wall']:.1%}); "
                          f"ack p99 <= {ack['p99_ms_le']} ms{_forks(srv)}", flush=True)
                for i, part in enumerate(r.get("parts", ()), 1):
                    print(f"{'':>18}phase {i}/{len(r['parts'])}: {part['orders']:>7} orders "
                          f"{part['orders_per_s']:>6}/s  p50 {part['p50_ms']:.2f} ms  p99 "
                          f"{part['p99_ms']:.2f} ms  p99.9 {part['p999_ms']:.2f} ms  max "
                          f"{part['max_ms']} ms  (from send p99 {part['service_p99_ms']:.2f}); "
                          f"generator late max {part['generator_lag_max_ms']} ms", flush=True)
                share = r.get("cpu_share")
                if share:
                    lag = ""
                    if r.get("generator_lag_p99_ms") is not None:
                        lag = (f"; generator loop late p99 {r['generator_lag_p99_ms']:.2f} ms, "
                               f"max {r['generator_lag_max_ms']:.1f} ms")
                    print(f"{'':>18}cpu: server loop thread {share['loop_thread']:.0%} of a core "
                          f"(preempted {share.get('loop_preempted_per_order', 0):.2f}x per "
                          f"order), "
                          f"its other threads {share['other_threads']:.0%}, generator "
                          f"{share['generator']:.0%}; load average {share['load_avg_1m']}{lag}"
                          f"; major page faults: server {r['major_faults']['server']}, "
                          f"generator {r['major_faults']['generator']}",
                          flush=True)
                sw = r.get("switches")
                if sw:
                    n, b = max(r["orders"], 1), max(sw["batches"], 1)
                    print(f"{'':>18}context switches (voluntary/involuntary): loop "
                          f"{sw['loop']['voluntary'] / n:.2f}/{sw['loop']['involuntary'] / n:.2f}"
                          f" per order, {sw['loop']['voluntary'] / b:.1f}/"
                          f"{sw['loop']['involuntary'] / b:.1f} per batch; other threads "
                          f"{sw['others']['voluntary'] / n:.2f}/"
                          f"{sw['others']['involuntary'] / n:.2f} per order, "
                          f"{sw['others']['voluntary'] / b:.1f}/"
                          f"{sw['others']['involuntary'] / b:.1f} per batch "
                          f"({sw['batches']} journal batches)", flush=True)

        async def phases(name: str, one: Any) -> dict[str, Any]:
            """``one(i)``: phase i, with its own client order ids (a repeated id would be
            answered as a duplicate, placing nothing: phases 2-3 of the 7th session did so)."""
            return pooled(name, [await one(i) for i in range(max(1, args.rate_phases))])

        def phase(coro_fn: Any) -> dict[str, Any]:
            before = _try_scrape(base)
            threads0 = thread_cpu(proc.pid) if proc is not None else {}
            faults0 = (major_faults(proc.pid) if proc is not None else 0, major_faults())
            preempted0 = preemptions(proc.pid) if proc is not None else 0
            switched0 = switches(proc.pid) if proc is not None else {}
            gen0 = time.process_time()
            t = time.perf_counter()
            r: dict[str, Any] = asyncio.run(coro_fn())
            r.pop("_samples", None)
            if "parts" in r:
                timelines.append((r, [part.pop("_timeline", []) for part in r["parts"]]))
            el = time.perf_counter() - t
            if proc is not None:
                r["cpu_share"] = busy(proc.pid, threads0, thread_cpu(proc.pid), gen0, el)
                r["major_faults"] = {"server": major_faults(proc.pid) - faults0[0],
                                     "generator": major_faults() - faults0[1]}
                r["cpu_share"]["loop_preempted_per_order"] = round(
                    (preemptions(proc.pid) - preempted0) / max(r["orders"], 1), 3)
            after = _try_scrape(base)
            if before is not None and after is not None:
                r["server"] = server_breakdown(before, after, el, r["orders"])
            if proc is not None:
                switched = switches(proc.pid)
                batches = (r.get("server") or {}).get("group_commit", {}).get("batches") or 0
                r["switches"] = {
                    who: {"voluntary": switched[who][0] - switched0[who][0],
                          "involuntary": switched[who][1] - switched0[who][1]}
                    for who in switched}
                r["switches"]["batches"] = batches
            show(r)
            return r

        if args.only in (None, "rest"):
            def native_max() -> dict[str, Any]:
                return phase(lambda: rest_max(host, port, creds, args.conns, args.rest_orders))

            def binance_max() -> dict[str, Any]:
                return phase(lambda: rest_max(host, port, creds, args.conns, args.rest_orders,
                                              BinanceConn, "binance_max", 500))

            if binance_first:
                bmax = binance_max()
                rmax = native_max()
            else:
                rmax = native_max()
                bmax = binance_max()
            rate = args.rest_rate or max(1.0, rmax["orders_per_s"] / 2)
            phase(lambda: phases("rest_rate", lambda i: rest_rate(
                host, port, creds, rate, args.rate_seconds, args.conns, REST_RATE_SEED + i)))
            results[-1]["target_rate"] = round(rate)
            results[-1]["half_of_max"] = args.rest_rate is None
            bmax["binance_vs_native"] = round(bmax["orders_per_s"]
                                              / max(rmax["orders_per_s"], 1), 3)
        if args.only in (None, "ws"):
            wmax = phase(lambda: ws_max(ws_url, creds, args.ws_conns, args.window,
                                        args.ws_orders))
            rate = args.ws_rate or max(1.0, wmax["orders_per_s"] / 2)
            phase(lambda: phases("ws_rate", lambda i: ws_rate(
                ws_url, creds, rate, args.rate_seconds, args.ws_conns, WS_RATE_SEED + i)))
            results[-1]["target_rate"] = round(rate)
            results[-1]["half_of_max"] = args.ws_rate is None
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if tmp is not None:
            if args.trace:
                trace_report(tmp / "trace.json", timelines, args.json, args.trace_keep)
            shutil.rmtree(tmp, ignore_errors=True)
    return results


if __name__ == "__main__":
    main()
