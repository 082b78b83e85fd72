"""``bastion upgrade``: switch a running cluster to a candidate engine version, or ``--back``.

Exit status: 0 done, 1 a step failed (the report says which and what ran), 2 bad input.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli.durability import err, out
from bastion.cli.errors import clean_errors
from bastion.ops.shadow_diff import ShadowInputError, load_intended
from bastion.ops.upgrade import upgrade


@clean_errors
def upgrade_cmd(
    data: Annotated[Path, typer.Option("--data", help="Cluster data directory.")],
    candidate: Annotated[str | None, typer.Option(
        "--candidate", help="Candidate source: a directory or a git ref.")] = None,
    back: Annotated[bool, typer.Option("--back", help="Return to the previous version.")]
    = False,
    repo: Annotated[Path, typer.Option("--repo", help="Git repository for a ref.")] = Path("."),
    intended: Annotated[Path | None, typer.Option(
        "--intended", help="TOML file of declared intended differences (shadow-check).")]
    = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per catch-up.")] = 120.0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """Shadow-check, standby on the candidate, catch up + hashes, switchover, upgrade the rest."""
    try:
        rules = load_intended(intended)
        rep = asyncio.run(upgrade(data, candidate, back=back, repo=repo, rules=rules,
                                  timeout=timeout,
                                  progress=(lambda _: None) if as_json else
                                  (lambda line: out.print(line, markup=False))))
    except ShadowInputError as exc:
        err.print(f"error: {exc.code}: {exc}", markup=False)
        raise typer.Exit(2) from None
    if as_json:
        out.print(json.dumps({
            "ok": rep.ok, "target": rep.target.__dict__, "pause_ms": rep.pause_ms,
            "steps": [s.__dict__ for s in rep.steps], "shadow": rep.shadow}), markup=False)
    elif rep.ok:
        out.print(f"now on {rep.target.label}; order entry paused {rep.pause_ms} ms at the "
                  "switchover", markup=False)
    else:
        failed = next(s for s in rep.steps if not s.ok) if rep.steps else None
        err.print(f"error: UPGRADE_FAILED at {failed.name if failed else '?'}: "
                  f"{failed.detail if failed else ''}", markup=False)
    if not rep.ok:
        raise typer.Exit(1)
