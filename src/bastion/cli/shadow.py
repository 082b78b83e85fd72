"""``bastion shadow``: diff a candidate engine against this one over a (live) journal.

Exit status: 0 no unexplained differences, 1 unexplained differences, 2 bad input or a run
that failed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from bastion.cli.durability import DataOpt, err, out
from bastion.cli.errors import clean_errors
from bastion.ops.shadow import report_dict, shadow
from bastion.ops.shadow_diff import ShadowInputError, load_intended


def _events(events: list[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(e, sort_keys=True) for e in events) or "(none)"


def _print(rep: dict[str, Any]) -> None:
    lo, hi = rep["range"]
    start = f"snapshot {rep['snapshot']}" if rep["snapshot"] else "an empty state"
    out.print(f"shadow run over seqs {lo}..{hi} from {start}: {rep['commands']} commands")
    runs = Table("engine", "source", "commands", "apply s", "commands/s", "final state hash")
    for label, r in rep["runs"].items():
        runs.add_row(label, r["source"], str(r["commands"]), f"{r['apply_seconds']:.3f}",
                     f"{r['ops_per_second']:,}", r["final_hash"][:16])
    out.print(runs)
    if rep["unexplained_by_event"] or rep["intended_by_event"]:
        counts = Table("event type", "unexplained", "intended")
        for name in sorted(set(rep["unexplained_by_event"]) | set(rep["intended_by_event"])):
            counts.add_row(name, str(rep["unexplained_by_event"].get(name, 0)),
                           str(rep["intended_by_event"].get(name, 0)))
        out.print(counts)
    out.print(f"state hashes: {rep['hash_checks']} checked, {rep['hash_mismatches']} differ")
    first = rep["first_divergence"]
    if first is not None:
        out.print(f"first divergence at seq {first['seq']} ({', '.join(first['unexplained'])})")
        if first["differing_fields"]:
            out.print("fields that differ: " + ", ".join(first["differing_fields"]),
                      markup=False)
        out.print("baseline events:\n" + _events(first["baseline"]), markup=False)
        out.print("candidate events:\n" + _events(first["candidate"]), markup=False)
    if rep["unexplained_hash_mismatch_seq"]:
        seq = rep["unexplained_hash_mismatch_seq"]
        where = "at the end" if seq == -1 else f"at seq {seq}"
        out.print(f"state hash differs {where} with identical events: hidden state change")
    if rep["length_mismatch"]:
        out.print(f"runs disagree in length: {rep['length_mismatch']}")
    out.print("OK: no unexplained differences" if rep["ok"] else "FAIL: unexplained differences")


@clean_errors
def shadow_cmd(
    candidate: Annotated[str, typer.Option("--candidate",
                                           help="Candidate source: a directory or a git ref.")],
    data: DataOpt = Path("data"),
    from_snapshot: Annotated[str | None, typer.Option(
        "--from-snapshot", help="Start from this snapshot (name or id) instead of seq 0.")] = None,
    to_seq: Annotated[int | None, typer.Option("--to-seq", help="Last seq (default: end).")] = None,
    intended: Annotated[Path | None, typer.Option(
        "--intended", help="TOML file of declared intended differences.")] = None,
    repo: Annotated[Path, typer.Option("--repo", help="Git repository for a ref.")] = Path("."),
    python: Annotated[str | None, typer.Option(
        "--python", help="Interpreter for both runs (e.g. a candidate venv's python).")] = None,
    hash_every: Annotated[int, typer.Option("--hash-every",
                                            help="Compare state hashes every N commands.")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """Run a candidate engine beside this one over the journal; diff events and state hashes."""
    try:
        rules = load_intended(intended)
        rep = report_dict(shadow(candidate, data, snapshot=from_snapshot, to_seq=to_seq,
                                 rules=rules, repo=repo, python=python, hash_every=hash_every))
    except ShadowInputError as exc:
        err.print(f"error: {exc.code}: {exc}", markup=False)
        raise typer.Exit(2) from None
    if as_json:
        out.print(json.dumps(rep), markup=False)
    else:
        _print(rep)
    if not rep["ok"]:
        raise typer.Exit(1)
