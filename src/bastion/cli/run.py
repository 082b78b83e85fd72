"""``bastion run`` / ``make run``: the embedded default — one node with the local journal,
demo markets and a funded demo account, the trading API on 127.0.0.1:8080.

The process serves until Ctrl-C / SIGTERM. An operator rollback of the running deployment
(``POST /admin/ops/rollback``, ``bastion rollback --live``) halts every market, records the
request and shuts the server down cleanly; this loop then rolls the data directory back
(abandoned tail archived, audited) and serves again, every market reopened in ``recovery``
for the requested time.

Environment overrides: BASTION_HTTP_PORT, BASTION_DATA, BASTION_DEMO_KEY, BASTION_DEMO_SECRET,
BASTION_ADMIN_TOKEN, BASTION_DEMO_TRAFFIC (see docs/trading-api.md for the rest).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

from bastion.api.config import Settings, load_settings

log = logging.getLogger("bastion.run")

Hook = Callable[[Any, Settings], None]


def with_startup(app: Any, step: Callable[[Any], Any]) -> None:
    """Run ``await step(app)`` once the app's own startup (node recovery, demo seed) is done
    and before the first request is served; if it returns a callable, await that at shutdown
    (before the node closes)."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[None]:
        async with inner(a):
            cleanup = await step(a)
            try:
                yield
            finally:
                if cleanup is not None:
                    await cleanup()

    app.router.lifespan_context = lifespan


def recovery_hook(reopen_recovery_s: float) -> Hook:
    """When asked (after a rollback or a crash), reopen every trading market in recovery
    before the first request is served."""

    def hook(app: Any, settings: Settings) -> None:
        if reopen_recovery_s <= 0:
            return

        async def step(a: Any) -> None:
            from bastion.api.http import now_ms
            from bastion.ops.recovery import reopen_in_recovery

            done = await reopen_in_recovery(a.state.ctx.gateway.node, now_ms(),
                                            reopen_recovery_s,
                                            "reopened after restart: recovery protection")
            log.warning("markets in recovery for %.0f s: %s", reopen_recovery_s,
                        ", ".join(done) or "none")

        with_startup(app, step)

    return hook


def demo_traffic_hook(_reopen_recovery_s: float) -> Hook:
    """``make run``: the drills' market maker and taker on every demo market."""

    def hook(app: Any, settings: Settings) -> None:
        async def step(a: Any) -> Any:
            from bastion.drills import demo_traffic

            crew = await demo_traffic.start(a.state.ctx)
            log.info("demo traffic: %d bots (BASTION_DEMO_TRAFFIC=0 turns them off)",
                     len(crew.bots))
            return lambda: demo_traffic.stop(crew)

        with_startup(app, step)

    return hook


def serve_loop(settings: Settings, hooks: list[Callable[[float], Hook]] | None = None,
               reopen_recovery_s: float = 0.0) -> None:
    """Serve; after an operator rollback request, roll back and serve again in recovery.
    ``hooks`` are factories called with this start's recovery seconds (drills add theirs)."""
    import uvicorn

    from bastion import corebuild
    from bastion.api.app import build
    from bastion.api.server import serve_config
    from bastion.ops.kit import perform_pending_rollback

    log.info("%s", corebuild.describe())
    settings.admin_token = settings.admin_token or secrets.token_urlsafe(24)
    while True:
        app = build(settings)
        for factory in [recovery_hook, *(hooks or [])]:
            factory(reopen_recovery_s)(app, settings)
        server = uvicorn.Server(serve_config(settings, app.state.guard))
        with suppress(KeyboardInterrupt):
            server.run()
        done = perform_pending_rollback(settings.data_dir)
        if done is None:
            return
        report, reopen_recovery_s = done
        log.warning("%s; restarting in recovery for %.0f s", report.summary(),
                    reopen_recovery_s)


def run_embedded() -> None:
    from bastion.api.server import prepare_process

    settings = load_settings()
    prepare_process(settings)
    traffic = settings.demo and os.environ.get("BASTION_DEMO_TRAFFIC", "1") not in (
        "0", "false", "no")
    serve_loop(settings, [demo_traffic_hook] if traffic else [])
