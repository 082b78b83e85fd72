"""``bastion drill NAME``: replay a seed incident live and print PASS/FAIL (exit 0 on PASS)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer


def drill_cmd(
    name: Annotated[str, typer.Argument(help="Drill name; 'list' shows them all.")],
    seed: Annotated[int, typer.Option(help="Seed of the traffic bots (reproducible).")] = 1,
    short: Annotated[bool, typer.Option("--short", help="CI mode: short phases.")] = False,
    no_guards: Annotated[bool, typer.Option("--no-guards",
                                            help="Switch the core's halting guards off.")] = False,
    out: Annotated[Path | None, typer.Option(help="Directory for data, report.json, drill.png "
                                                  "(default: a new temp dir).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report JSON as the last "
                                                         "line.")] = False,
) -> None:
    """Start a deployment, drive traffic, inject the fault, respond with the operator kit,
    check the invariants; prints a timeline, figures and PASS/FAIL (exit status 0 on PASS)."""
    from bastion.drills import all_drills
    from bastion.drills.base import DrillOptions
    from bastion.drills.runner import execute

    drills = all_drills()
    if name == "list":
        for d in drills.values():
            typer.echo(f"{d.name:<28} {d.title}")
        return
    drill = drills.get(name)
    if drill is None:
        typer.echo(f"error: UNKNOWN_DRILL: no drill {name!r} (known: {', '.join(drills)})",
                   err=True)
        raise typer.Exit(2)
    opts = DrillOptions(seed=seed, short=short, guards=not no_guards, out=out)
    report = asyncio.run(execute(drill, opts))
    typer.echo(report.text())
    if as_json:
        typer.echo(json.dumps(report.to_json(), sort_keys=True, separators=(",", ":")))
    raise typer.Exit(0 if report.passed else 1)
