"""The drill deployment's server process: exactly ``bastion run`` (same app, node, journal,
demo oracle), plus what a drill needs from inside the deployment.

- ``BASTION_REOPEN_RECOVERY_S``: when the node starts on a non-empty journal (a restart after
  a crash or a rollback), every trading market reopens in ``recovery`` for that many seconds
  before the first request is served.
- ``POST /drill/submit`` (operator token): journal one raw command through the node. It is the
  fault injector: a corrupted funding service, a mad price feeder. It exists only here.

Run: ``python -m bastion.drills.host`` with the ``BASTION_*`` variables of ``bastion run``.
"""

from __future__ import annotations

import hmac
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bastion.api.config import Settings
from bastion.core import commands as C
from bastion.ops.recovery import reopen_in_recovery

log = logging.getLogger("bastion.drills")
_decoder = msgspec.json.Decoder(C.AnyCommand)


def _authorized(request: Request, token: str) -> bool:
    got = request.headers.get("authorization", "")
    return hmac.compare_digest(got.encode(), f"Bearer {token}".encode())


def journaled_before(data_dir: Path) -> bool:
    """True when the data directory already holds journaled commands (this start is a
    restart, not the first start that seeds the demo)."""
    from bastion.journal.local import LocalJournal
    from bastion.node.layout import DataDir

    layout = DataDir.at(data_dir)
    if not layout.journal.is_dir():
        return False
    with LocalJournal(layout.journal, archive_dir=layout.journal_archive,
                      readonly=True) as journal:
        return journal.last_seq > 0


def add_drill_hooks(app: Starlette, settings: Settings, reopen_s: float) -> None:
    inner = app.router.lifespan_context
    restart = journaled_before(settings.data_dir)

    async def submit(request: Request) -> Response:
        assert settings.admin_token is not None
        if not _authorized(request, settings.admin_token):
            return Response(b'{"code":"UNAUTHORIZED","message":"operator token required"}',
                            status_code=401, media_type="application/json")
        try:
            cmd = _decoder.decode(await request.body())
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            body = msgspec.json.encode({"code": "MALFORMED_REQUEST", "message": str(exc)})
            return Response(body, status_code=400, media_type="application/json")
        events = await app.state.ctx.gateway.node.submit(cmd)
        return Response(msgspec.json.encode({"seq": cmd.seq, "events": events}),
                        media_type="application/json")

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[None]:
        async with inner(a):
            node = a.state.ctx.gateway.node
            if reopen_s > 0 and restart:
                from bastion.api.http import now_ms

                done = await reopen_in_recovery(node, now_ms(), reopen_s,
                                                "restart: recovery protection period")
                log.warning("reopened in recovery for %.1f s: %s", reopen_s, ", ".join(done))
            yield

    app.router.lifespan_context = lifespan
    app.router.routes.append(Route("/drill/submit", submit, methods=["POST"]))


def main() -> None:
    import uvicorn

    from bastion.api.app import build
    from bastion.node.gcpolicy import apply_gc_policy

    settings = Settings.from_env()
    logging.basicConfig(level=getattr(logging, settings.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    sys.setswitchinterval(settings.switch_interval)
    apply_gc_policy()
    app = build(settings)
    add_drill_hooks(app, settings, float(os.environ.get("BASTION_REOPEN_RECOVERY_S", "0")))
    config = uvicorn.Config(app.state.guard, host=settings.host, port=settings.port,
                            loop="uvloop", http="httptools", ws=settings.ws_impl, lifespan="on",
                            log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
