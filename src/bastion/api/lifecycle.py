"""A gateway's node from start to stop: open it (recovery, demo markets once), the demo key,
the startup banner, and the final snapshot on shutdown."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from bastion.api.app_context import Context
from bastion.api.config import Settings
from bastion.api.nodelike import NodeLike, Snapshotting, Stoppable
from bastion.api.read.checkpoint import Restorer
from bastion.api.security.keys import PERMISSIONS
from bastion.core import events as E

log = logging.getLogger("bastion.api")


async def open_node(settings: Settings, factory: Callable[[], Any] | None = None,
                    restorer: Restorer | None = None) -> Any:
    """Recover the node from ``settings.data_dir`` and start it (``restorer`` follows the
    recovery to restore the read model); on an empty journal (and ``settings.demo``) journal
    the demo markets and funded accounts once."""
    from bastion.node.node import Node

    if factory is not None:
        node = factory()
    else:
        from bastion.node.config import NodeConfig

        node = Node(settings.data_dir, config=NodeConfig(group_max_delay=settings.group_delay,
                                                         writer_yields=settings.writer_yields),
                    recovery_sink=restorer.sink if restorer is not None else None)
    await node.start()
    if settings.demo and node.engine.seq == 0:
        from bastion import demo

        cmds = demo.demo_setup() + demo.demo_perp_setup()
        results = await node.submit_many(cmds)
        rejected = [ev for events in results for ev in events if type(ev) is E.Rejected]
        if rejected:
            log.error("demo setup had rejects: %s", rejected)
        log.info("journaled %d demo setup commands", len(cmds))
    return node


async def close_node(node: NodeLike) -> None:
    """Final snapshot, then close (drains in-flight commands, releases the journal lock); a
    node that shuts itself down (``Stoppable``) is just stopped."""
    if isinstance(node, Stoppable):
        await node.stop()
        return
    if not isinstance(node, Snapshotting):
        raise TypeError(f"{type(node).__name__} can neither stop nor close")
    try:
        if node.failure is None:
            info = await node.snapshot()
            log.info("final snapshot at seq %s", info.seq)
    except Exception as exc:
        log.warning("final snapshot failed (the journal still has everything): %s", exc)
    await node.close()


async def ensure_demo_key(ctx: Context) -> tuple[str, str] | None:
    """The demo account's key: from BASTION_DEMO_KEY/SECRET, else the one made on first run."""
    s = ctx.settings
    keys = ctx.keys
    perms = frozenset(PERMISSIONS)
    if s.demo_key and s.demo_secret:
        existing = keys.get(s.demo_key)
        if existing is None or existing.secret != s.demo_secret.encode() \
                or existing.account != s.demo_account or existing.permissions != perms:
            await keys.put(s.demo_account, perms, key=s.demo_key, secret=s.demo_secret, label="demo")
        return s.demo_key, s.demo_secret
    if not s.demo:
        return None
    for k in keys.for_account(s.demo_account):
        if k.label == "demo":
            return k.key, k.secret.decode()
    key, secret = await keys.put(s.demo_account, perms, label="demo")
    return key.key, secret


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
                     "BASTION_SERVER_KEY (kept apart from the data directory); see docs/trading-api.md "
                     "\"Running for real\".")
    return "\n".join(lines)
