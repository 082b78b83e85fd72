"""Running the gateway: open the node, seed the demo once, print credentials, log health,
serve with uvicorn, and shut down cleanly (final snapshot) on Ctrl-C / SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

from bastion.api.app_context import Context
from bastion.api.config import Settings
from bastion.api.keys import PERMISSIONS

log = logging.getLogger("bastion.api")


async def open_node(settings: Settings, factory: Any = None) -> Any:
    """Recover the node from ``settings.data_dir`` and start it; on an empty journal (and
    ``settings.demo``) journal the demo markets and funded accounts once."""
    from bastion.node.node import Node

    if factory is not None:
        node = factory()
    else:
        from bastion.node.config import NodeConfig

        node = Node(settings.data_dir, config=NodeConfig(group_max_delay=settings.group_delay))
    await node.start()
    if settings.demo and node.engine.seq == 0:
        from bastion.demo import demo_setup

        cmds = demo_setup()
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


class Health:
    """One line a second: sequence, commands/s, open orders, WebSocket clients."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def run(self) -> None:
        ctx = self.ctx
        gw = ctx.gateway
        interval = ctx.settings.health_interval
        status = ctx.extra.get("status")
        last_seq = gw.engine.seq
        last_t = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            seq = gw.engine.seq
            rate = (seq - last_seq) / max(now - last_t, 1e-9)
            last_seq, last_t = seq, now
            node = gw.node
            failed = getattr(node, "failure", None)
            conns = len({c for subs in (ctx.hub.channels.values() if ctx.hub else [])
                         for c in subs})
            log.info("health seq=%d ops/s=%.0f open_orders=%d ws_subscribers=%d%s", seq, rate,
                     len(gw.engine.orders), conns, f" NODE FAILED: {failed}" if failed else "")
            if status is not None and failed is None:
                try:
                    status.observe_node_health(time.time_ns() // 1_000_000, 0)
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
    return "\n".join(lines)


def serve(settings: Settings) -> None:
    """Blocking: run the server until Ctrl-C / SIGTERM."""
    import uvicorn

    from bastion.api.app import build

    logging.basicConfig(level=getattr(logging, settings.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    # The journal writer thread needs the GIL to hand back each durable batch; with the default
    # 5 ms switch interval a busy event loop makes it wait that long on every batch.
    sys.setswitchinterval(settings.switch_interval)
    import os
    if os.environ.get("BASTION_GC_EXPERIMENT") == "off":
        import gc
        gc.disable()
    if os.environ.get("BASTION_GC_TRACE"):
        import gc
        t0 = [0.0]
        def cb(phase, info):
            if phase == "start":
                t0[0] = time.perf_counter()
            else:
                d = time.perf_counter() - t0[0]
                if d > 0.002:
                    print(f"gc gen{info['generation']} {d*1000:.1f} ms collected {info['collected']}", file=sys.stderr)
        gc.callbacks.append(cb)
    app = build(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, loop="uvloop",
                            http="httptools", ws="websockets", lifespan="on",
                            log_level="warning", access_log=False,
                            ws_max_size=settings.max_ws_message, ws_ping_interval=20,
                            timeout_graceful_shutdown=5, backlog=2048, proxy_headers=False,
                            server_header=False, date_header=False)
    uvicorn.Server(config).run()
