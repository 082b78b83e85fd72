"""Running the gateway: open the node, seed the demo once, print credentials, log health,
serve with uvicorn, and shut down cleanly (final snapshot) on Ctrl-C / SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bastion.api.app_context import Context
from bastion.api.checkpoint import Restorer
from bastion.api.config import Settings
from bastion.api.keys import PERMISSIONS
from bastion.api.protocol import guarded_protocol
from bastion.node.gcpolicy import apply_gc_policy

if TYPE_CHECKING:
    from bastion.api.metrics import Metrics

log = logging.getLogger("bastion.api")


async def open_node(settings: Settings, factory: Any = None,
                    restorer: Restorer | None = None) -> Any:
    """Recover the node from ``settings.data_dir`` and start it (``restorer`` follows the
    recovery to restore the read model); on an empty journal (and ``settings.demo``) journal
    the demo markets and funded accounts once."""
    from bastion.node.node import Node

    if factory is not None:
        node = factory()
    else:
        from bastion.node.config import NodeConfig

        node = Node(settings.data_dir, config=NodeConfig(group_max_delay=settings.group_delay),
                    recovery_sink=restorer.sink if restorer is not None else None)
    await node.start()
    if settings.demo and node.engine.seq == 0:
        from bastion import demo

        cmds = demo.demo_setup()
        perp_setup = getattr(demo, "demo_perp_setup", None)
        if perp_setup is not None:
            cmds += perp_setup()
        results = await node.submit_many(cmds)
        rejected = [ev for events in results for ev in events if type(ev).__name__ == "Rejected"]
        if rejected:
            log.error("demo setup had rejects: %s", rejected)
        log.info("journaled %d demo setup commands", len(cmds))
    return node


async def close_node(node: Any) -> None:
    """Final snapshot, then close (drains in-flight commands, releases the journal lock)."""
    stop = getattr(node, "stop", None)
    if stop is not None:
        await stop()
        return
    try:
        if getattr(node, "failure", None) is None:
            info = await node.snapshot()
            log.info("final snapshot at seq %s", getattr(info, "seq", "?"))
    except Exception as exc:
        log.warning("final snapshot failed (the journal still has everything): %s", exc)
    await node.close()


def ensure_demo_key(ctx: Context) -> tuple[str, str] | None:
    """The demo account's key: from BASTION_DEMO_KEY/SECRET, else the one made on first run."""
    s = ctx.settings
    keys = ctx.keys
    perms = frozenset(PERMISSIONS)
    if s.demo_key and s.demo_secret:
        existing = keys.get(s.demo_key)
        if existing is None or existing.secret != s.demo_secret.encode() \
                or existing.account != s.demo_account or existing.permissions != perms:
            keys.put(s.demo_account, perms, key=s.demo_key, secret=s.demo_secret, label="demo")
        return s.demo_key, s.demo_secret
    if not s.demo:
        return None
    for k in keys.for_account(s.demo_account):
        if k.label == "demo":
            return k.key, k.secret.decode()
    key, secret = keys.put(s.demo_account, perms, label="demo")
    return key.key, secret


class GcWatch:
    """Longest garbage-collector pause since the last report (tail latency shows up here);
    every pause also goes to ``observe(generation, seconds)`` (the metrics histogram)."""

    def __init__(self, observe: Callable[[int, float], None] | None = None) -> None:
        self.max_pause = 0.0
        self.collections = 0
        self._t0 = 0.0
        self._observe = observe
        gc.callbacks.append(self._cb)

    def _cb(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            pause = time.perf_counter() - self._t0
            self.collections += 1
            self.max_pause = max(self.max_pause, pause)
            if self._observe is not None:
                self._observe(int(info.get("generation", 2)), pause)

    def take(self) -> tuple[int, float]:
        out = (self.collections, self.max_pause)
        self.collections, self.max_pause = 0, 0.0
        return out

    def close(self) -> None:
        if self._cb in gc.callbacks:
            gc.callbacks.remove(self._cb)


class LoopLag:
    """Worst event-loop stall since the last report: a 5 ms ticker measures how late it runs
    (a blocked loop delays every acknowledgement by that much); each lateness also goes to
    ``observe`` (the metrics histogram)."""

    def __init__(self, observe: Callable[[float], None] | None = None) -> None:
        self.worst = 0.0
        self._observe = observe

    async def run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            late = max(0.0, time.perf_counter() - t - 0.005)
            self.worst = max(self.worst, late)
            if self._observe is not None:
                self._observe(late)

    def take(self) -> float:
        out, self.worst = self.worst, 0.0
        return out


#: a stall at least this long is logged at once, not only in the minute's line
STALL = 0.1


class Health:
    """Checks every ``health_interval`` (feeds the status page, runs the full collection on
    its clock) and logs one line a minute (``health_log_interval``), or at once when the node fails or recovers or the
    loop stalls: sequence, commands/s, open orders, WebSocket clients, GC pauses and the worst
    event-loop stall over the period. ``/metrics`` has the same figures continuously."""

    def __init__(self, ctx: Context, metrics: Metrics | None = None) -> None:
        self.ctx = ctx
        self.gc = GcWatch(metrics.gc_observer() if metrics is not None else None)
        self.lag = LoopLag(metrics.loop_lag.observe if metrics is not None else None)
        self.log_every = ctx.settings.health_log_interval

    async def run(self) -> None:
        lag = asyncio.create_task(self.lag.run())
        try:
            await self._run()
        finally:
            lag.cancel()
            self.gc.close()

    async def _run(self) -> None:
        ctx = self.ctx
        gw = ctx.gateway
        interval = ctx.settings.health_interval
        status = ctx.extra.get("status")
        last_seq = gw.engine.seq
        last_t = last_full = time.monotonic()
        n_gc, pause, loop_lag = 0, 0.0, 0.0
        was_failed: str | None = None
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            node = gw.node
            failed = node.failure
            if now - last_full >= ctx.settings.full_gc_interval:
                last_full = now
                t0 = time.perf_counter()
                gc.collect()
                log.info("full garbage collection took %.1f ms", (time.perf_counter() - t0) * 1e3)
            n, p = self.gc.take()
            tick_lag = self.lag.take()
            n_gc, pause, loop_lag = n_gc + n, max(pause, p), max(loop_lag, tick_lag)
            pending = node.pending_age()
            state = str(failed) or type(failed).__name__ if failed is not None else None
            if now - last_t >= self.log_every or state != was_failed or max(p, tick_lag) >= STALL:
                seq = gw.engine.seq
                conns = sum(ctx.hub.per_ip.values()) if ctx.hub else 0
                log.log(logging.WARNING if failed is not None or max(p, tick_lag) >= STALL
                        else logging.INFO,
                        "health seq=%d ops/s=%.0f open_orders=%d ws_connections=%d gc=%d "
                        "gc_max_ms=%.1f loop_lag_max_ms=%.1f journal_wait_ms=%.1f%s", seq,
                        (seq - last_seq) / max(now - last_t, 1e-9), len(gw.engine.orders), conns,
                        n_gc, pause * 1000, loop_lag * 1000, pending * 1000,
                        f" NODE FAILED: {failed}" if failed is not None else "")
                last_seq, last_t = seq, now
                n_gc, pause, loop_lag = 0, 0.0, 0.0
                was_failed = state
            if status is not None and failed is not None:
                try:
                    status.observe_node_failure(state)
                except Exception:
                    log.exception("status failure report failed")
            elif status is not None:
                try:
                    t0 = time.perf_counter()
                    status.observe_node_health(time.time_ns() // 1_000_000 - int(pending * 1000),
                                               int(tick_lag * 1000))
                    if time.perf_counter() - t0 > 0.002:
                        log.debug("status health report took %.1f ms",
                                  (time.perf_counter() - t0) * 1000)
                except Exception:
                    log.exception("status health report failed")


def banner(ctx: Context, creds: tuple[str, str] | None) -> str:
    s = ctx.settings
    url = f"http://{s.host}:{s.port}"
    lines = [
        f"Bastion is up: {url}  (docs {url}/docs, status {url}/status, WebSocket "
        f"ws://{s.host}:{s.port}/v1/ws)",
        f"data directory: {s.data_dir.resolve()}   markets: "
        + ", ".join(sorted(ctx.gateway.engine.markets)),
    ]
    if creds:
        lines.append(f"demo account {s.demo_account}: API key {creds[0]}  secret {creds[1]}")
    lines.append(f"operator token (Authorization: Bearer ...): {s.admin_token}")
    if s.demo:
        lines.append("DEMO MODE: demo markets, a funded demo account with a printed key, a "
                     "simulated price feed and a generated operator token. For a real "
                     "deployment set BASTION_DEMO=0, BASTION_ADMIN_TOKEN, and "
                     "BASTION_SERVER_KEY (kept apart from the data directory); see README "
                     "\"Running for real\".")
    return "\n".join(lines)


def _file_budget(wanted: int) -> int:
    """Raise the open-file limit to its hard maximum and keep the concurrency cap below it
    (with room for the journal, snapshots and the listening socket), so a flood meets a 503
    from the cap rather than a failed ``accept``."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(16, min(wanted, soft - 128))


def prepare_process(settings: Settings) -> None:
    """Logging, GIL switch interval and GC policy of a server process (once per process)."""
    logging.basicConfig(level=getattr(logging, settings.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    # The journal writer thread needs the GIL to hand back each durable batch; with the default
    # 5 ms switch interval a busy event loop makes it wait that long on every batch.
    sys.setswitchinterval(settings.switch_interval)
    apply_gc_policy()  # full collections then run on the health clock (``full_gc_interval``)


def serve_config(settings: Settings, app: Any) -> Any:
    """The uvicorn configuration of every server process (``serve``, ``bastion run``)."""
    import uvicorn

    concurrency = _file_budget(settings.max_concurrency)
    return uvicorn.Config(app, host=settings.host, port=settings.port, loop="uvloop",
                          http=guarded_protocol(settings.header_timeout,
                                                settings.pending_per_ip),
                          ws=settings.ws_impl, lifespan="on",
                          limit_concurrency=concurrency,
                          timeout_keep_alive=max(1, round(settings.keep_alive)),
                          log_level="warning", access_log=False,
                          ws_max_size=settings.max_ws_message, ws_ping_interval=20,
                          timeout_graceful_shutdown=5, backlog=2048, proxy_headers=False,
                          server_header=False, date_header=False)


def serve(settings: Settings) -> None:
    """Blocking: run the server until Ctrl-C / SIGTERM."""
    import uvicorn

    from bastion.api.app import asgi

    prepare_process(settings)
    uvicorn.Server(serve_config(settings, asgi(settings))).run()
