"""Process entry points: ``bastion node`` and ``bastion gateway`` (one shard each)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from bastion.cluster.config import ClusterConfig


def _logging(level: str = "info") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


def run_node(config: ClusterConfig, name: str, zone: str, data_dir: Path,
             demo: bool = True) -> None:
    """Blocking: standby/leader until SIGTERM or Ctrl-C."""
    from bastion.cluster.member import Member

    _logging()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Member(config, name, zone, data_dir, demo=demo).run(stop)

    asyncio.run(main())


def run_gateway(config: ClusterConfig, name: str, settings: Any) -> None:
    """Blocking: the API app over a ``RemoteNode`` (commands to the leader, reads local)."""
    import uvicorn

    from bastion.api.app import build
    from bastion.api.ws.protocol import ws_protocol
    from bastion.cluster.remote import RemoteNode
    from bastion.node.gcpolicy import apply_gc_policy

    _logging(settings.log_level)
    sys.setswitchinterval(settings.switch_interval)
    apply_gc_policy()
    remotes: list[RemoteNode] = []

    def node() -> RemoteNode:
        remotes.append(RemoteNode(config, name))
        return remotes[-1]

    built = build(settings, node)
    metrics = built.state.metrics  # /metrics: this process is a gateway with a replica
    metrics.role = lambda: "gateway"
    metrics.replica_lag = lambda: remotes[-1].lag() if remotes else None
    app = built.state.guard
    server = uvicorn.Config(app, host=settings.host, port=settings.port, loop="uvloop",
                            http="httptools", ws=ws_protocol(settings.ws_impl), lifespan="on",
                            log_level="warning", access_log=False,
                            ws_max_size=settings.max_ws_message, ws_ping_interval=20,
                            timeout_graceful_shutdown=5, backlog=2048, proxy_headers=False,
                            server_header=False, date_header=False)
    uvicorn.Server(server).run()
