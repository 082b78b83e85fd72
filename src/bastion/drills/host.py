"""The drill deployment's server process: exactly ``bastion run`` (same app, node, journal,
demo oracle, operator kit, rollback loop), plus what a drill needs from inside it.

- ``BASTION_REOPEN_RECOVERY_S``: when the node starts on a non-empty journal (a restart after
  a crash), every trading market reopens in ``recovery`` for that many seconds before the
  first request is served (after an operator rollback, the rollback's own period applies).
- ``POST /drill/submit`` (operator token): journal one raw command through the node. It is the
  fault injector (a corrupted funding service, a mad price feeder) and exists only here.

Run: ``python -m bastion.drills.host`` with the ``BASTION_*`` variables of ``bastion run``.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bastion.api.config import Settings, load_settings
from bastion.cli.run import Hook, serve_loop
from bastion.core import commands as C

_decoder = msgspec.json.Decoder(C.AnyCommand)


def journaled_before(data_dir: Path) -> bool:
    """True when the data directory already holds journaled commands (a restart)."""
    from bastion.journal.local import LocalJournal
    from bastion.node.layout import DataDir

    layout = DataDir.at(data_dir)
    if not layout.journal.is_dir():
        return False
    with LocalJournal(layout.journal, archive_dir=layout.journal_archive,
                      readonly=True) as journal:
        return journal.last_seq > 0


def inject_hook(_reopen_s: float) -> Hook:
    def hook(app: Any, settings: Settings) -> None:
        async def submit(request: Request) -> Response:
            token = f"Bearer {settings.admin_token}".encode()
            if not hmac.compare_digest(request.headers.get("authorization", "").encode(), token):
                return Response(b'{"code":"UNAUTHORIZED","message":"operator token required"}',
                                status_code=401, media_type="application/json")
            try:
                cmd = _decoder.decode(await request.body())
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                body = msgspec.json.encode({"code": "MALFORMED_REQUEST", "message": str(exc)})
                return Response(body, status_code=400, media_type="application/json")
            events = await request.app.state.ctx.gateway.node.submit(cmd)
            return Response(msgspec.json.encode({"seq": cmd.seq, "events": events}),
                            media_type="application/json")

        app.router.routes.append(Route("/drill/submit", submit, methods=["POST"]))

    return hook


def main() -> None:
    from bastion.api.server import prepare_process

    settings = load_settings()
    prepare_process(settings)
    reopen = float(os.environ.get("BASTION_REOPEN_RECOVERY_S", "0"))
    serve_loop(settings, [inject_hook],
               reopen_recovery_s=reopen if journaled_before(settings.data_dir) else 0.0)


if __name__ == "__main__":
    main()
