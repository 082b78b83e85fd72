"""The gateway's health: GC pauses, event-loop lag, the periodic health line and the status
page's node-health feed."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bastion import acktrace
from bastion.api.app_context import Context
from bastion.node.gcpolicy import FullCollections

if TYPE_CHECKING:
    from bastion.api.metrics import Metrics

log = logging.getLogger("bastion.api")


class GcWatch:
    """Longest garbage-collector pause since the last report (tail latency shows up here);
    every pause also goes to ``observe(generation, seconds)`` (the metrics histogram)."""

    def __init__(self, observe: Callable[[int, float], None] | None = None) -> None:
        self.max_pause = 0.0
        self.collections = 0
        self._t0 = 0.0
        self._observe = observe
        self._trace = acktrace.TRACE
        gc.callbacks.append(self._cb)

    def _cb(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            pause = time.perf_counter() - self._t0
            if self._trace is not None:
                end = acktrace.now()
                self._trace.event(f"gc{info.get('generation', 2)}", end - int(pause * 1e9), end,
                                  int(info.get("collected", 0)))
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
        trace = acktrace.TRACE
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            late = max(0.0, time.perf_counter() - t - 0.005)
            self.worst = max(self.worst, late)
            if late > TRACE_LATE and trace is not None:
                end = acktrace.now()
                trace.event("loop_late", end - int(late * 1e9), end, int(late * 1e6))
            if self._observe is not None:
                self._observe(late)

    def take(self) -> float:
        out, self.worst = self.worst, 0.0
        return out


#: a 5 ms tick this much late is a ``loop_late`` event of the ack trace (``bastion.acktrace``)
TRACE_LATE = 0.002

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
        self.full_gc = FullCollections()
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
                start = acktrace.now()
                self.full_gc.run()
                if acktrace.TRACE is not None:
                    acktrace.TRACE.event("full_gc", start, acktrace.now())
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
                    status.tracker.observe_node_failure(state)
                except Exception:
                    log.exception("status failure report failed")
            elif status is not None:
                try:
                    t0 = time.perf_counter()
                    status.tracker.observe_node_health(
                        time.time_ns() // 1_000_000 - int(pending * 1000), int(tick_lag * 1000))
                    if time.perf_counter() - t0 > 0.002:
                        log.debug("status health report took %.1f ms",
                                  (time.perf_counter() - t0) * 1000)
                except Exception:
                    log.exception("status health report failed")
