"""Running the gateway: serve the app with uvicorn (limits, WebSocket implementation, file
budget) until Ctrl-C / SIGTERM; the app's lifespan opens and closes the node
(``bastion.api.lifecycle``)."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any

from bastion.api.config import Settings
from bastion.api.security.protocol import guarded_protocol
from bastion.api.ws.protocol import ws_protocol
from bastion.node.gcpolicy import apply_gc_policy
from bastion.node.memlock import lock_memory

log = logging.getLogger("bastion.api")


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
    """Logging, GIL switch interval, GC policy and (``mlock``) memory locking of a server
    process (once per process)."""
    logging.basicConfig(level=getattr(logging, settings.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    # The journal writer thread needs the GIL to hand back each durable batch; with the default
    # 5 ms switch interval a busy event loop makes it wait that long on every batch.
    sys.setswitchinterval(settings.switch_interval)
    apply_gc_policy()  # full collections then run on the health clock (``full_gc_interval``)
    if settings.mlock:
        why = lock_memory()
        if why is None:
            log.info("memory locked: pages stay resident once touched")
        else:
            log.warning("memory not locked: %s", why)


def serve_config(settings: Settings, app: Any) -> Any:
    """The uvicorn configuration of every server process (``serve``, ``bastion run``)."""
    import uvicorn

    concurrency = _file_budget(settings.max_concurrency)
    return uvicorn.Config(app, host=settings.host, port=settings.port, loop="uvloop",
                          http=guarded_protocol(settings.header_timeout,
                                                settings.pending_per_ip),
                          ws=ws_protocol(settings.ws_impl), lifespan="on",
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
