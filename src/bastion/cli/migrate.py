"""``bastion migrate``: check, dry-run, apply, roll back and list metadata migrations.

Exit status: 0 fine, 1 the migration would hurt (refused, or refuses previously valid orders
in bulk), 2 bad input (a bad file names the field at fault) or an unreachable node.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.table import Table

from bastion.cli.durability import DataOpt, err, out
from bastion.cli.errors import clean_errors
from bastion.journal.local import LocalJournal
from bastion.node.layout import DataDir
from bastion.node.recovery import rebuild
from bastion.ops.migrations.dryrun import dry_run
from bastion.ops.migrations.dryrun import report_dict as dry_run_dict
from bastion.ops.migrations.spec import MigrationError, load_migration
from bastion.snapshots.store import SnapshotStore

migrate_app = typer.Typer(help="Metadata migrations: dry-run on a copy of live state, apply, "
                               "roll back.", no_args_is_help=True)

FileArg = Annotated[Path, typer.Argument(help="Migration file (TOML).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON document.")]


def _load(path: Path) -> Any:
    try:
        return load_migration(path)
    except MigrationError as exc:
        where = f" at {exc.field}" if exc.field else ""
        err.print(f"error: {exc.code}{where}: {exc.message}", markup=False)
        raise typer.Exit(2) from None


def print_dry_run(rep: dict[str, Any]) -> None:
    m, live, win = rep["migration"], rep["live"], rep["window"]
    out.print(f"migration {m['id']} ({m['changes']} changes, digest {m['digest'][:12]}) by "
              f"{m['author']}: {m['description']}", markup=False)
    if rep["refused_now"]:
        r = rep["refused_now"]
        out.print(f"REFUSED on live state (seq {live['seq']}): {r['code']}: {r['message']}",
                  markup=False)
    else:
        c = rep["cancelled_now"]
        per = ", ".join(f"{k} {v}" for k, v in sorted(c["by_market"].items())) or "none"
        out.print(f"applies to live state at seq {live['seq']}; orders it would cancel: "
                  f"{c['count']} ({per})")
    if rep["refused_at_window_start"]:
        r = rep["refused_at_window_start"]
        out.print(f"could not be applied anywhere in the replay window: {r['code']}: "
                  f"{r['message']}", markup=False)
    out.print(f"replayed the last {win['minutes']} min of traffic through both copies: "
              f"{win['commands']} commands (seqs {win['from_seq']}..{win['to_seq']}; conflicts "
              f"resolved by cancel there: {rep['cancelled_at_window_start']} orders)")
    if rep["outcome_changes"]:
        table = Table("command", "market", "before", "after", "count", "of accepted",
                      "declared", "example")
        for c in rep["outcome_changes"]:
            ex = c["examples"][0]["message"] if c["examples"] else ""
            table.add_row(c["command"], c["market"], c["before"], c["after"], str(c["count"]),
                          str(c["previously_accepted"]), "yes" if c["declared"] else "no",
                          ex[:80])
        out.print(table)
    else:
        out.print("no command's outcome changes")
    if rep["fees"]:
        fees = Table("market", "trades", "fees before", "fees after", "delta", "asset")
        for mk, f in rep["fees"].items():
            def amount(units: int, dp: int = f["decimals"]) -> str:
                return f"{Decimal(units).scaleb(-dp):f}"
            fees.add_row(mk, str(f["trades"]), amount(f["baseline"]), amount(f["migrated"]),
                         ("+" if f["delta"] >= 0 else "") + amount(f["delta"]), f["asset"])
        out.print(fees)
    for b in rep["bulk_refusals"]:
        out.print(f"BULK REFUSAL: {b['refused']} of {b['previously_accepted']} previously "
                  f"accepted {b['command']} on {b['market']} ({b['percent']}%) now refused")
    out.print("OK: safe to apply" if rep["ok"] else "FAIL: do not apply")


@migrate_app.command("check")
def check_cmd(file: FileArg) -> None:
    """Parse and check a migration file's shape (no live state needed)."""
    mig = _load(file)
    out.print(f"{file}: migration {mig.id}, {len(mig.changes)} change(s), digest {mig.digest}")


@migrate_app.command("dry-run")
@clean_errors
def dry_run_cmd(
    file: FileArg,
    data: DataOpt = Path("data"),
    minutes: Annotated[int, typer.Option("--minutes", min=1, max=24 * 60,
                                         help="Replay this much recent traffic.")] = 10,
    max_refused_pct: Annotated[float, typer.Option(
        "--max-refused-pct", help="Fail when more than this share of a previously accepted "
                                  "command class is refused.")] = 1.0,
    min_refused: Annotated[int, typer.Option(
        "--min-refused", help="...and at least this many of them.")] = 5,
    as_json: JsonOpt = False,
) -> None:
    """Apply the migration to a copy of live state and replay recent traffic through it."""
    mig = _load(file)
    rep = dry_run_dict(dry_run(mig, data, minutes=minutes, max_refused_pct=max_refused_pct,
                               min_refused=min_refused))
    if as_json:
        out.print(json.dumps(rep), markup=False)
    else:
        print_dry_run(rep)
    if not rep["ok"]:
        raise typer.Exit(1)


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


@migrate_app.command("history")
@clean_errors
def history_cmd(data: DataOpt = Path("data"), as_json: JsonOpt = False) -> None:
    """Applied migrations and pending timed steps, from the journal (read-only; the node may
    keep running)."""
    layout = DataDir.at(data).require()
    with LocalJournal(layout.journal, archive_dir=layout.journal_archive,
                      readonly=True) as journal:
        engine, _ = rebuild(journal, SnapshotStore(layout.snapshots), progress=False)
    log = engine.migrations
    if as_json:
        out.print(msgspec.json.encode({"seq": engine.seq, "records": log.records,
                                       "pending": log.pending}).decode(), markup=False)
        return
    table = Table("id", "applied (UTC)", "seq", "author", "digest", "cancelled", "rolled back",
                  "dry-run", "description")
    for r in log.records:
        table.add_row(r.migration_id, _utc(r.ts), str(r.seq), r.author, r.digest[:12],
                      str(len(r.cancelled)), str(r.rolled_back_seq or ""), r.dry_run[:40],
                      r.description)
    out.print(table if log.records else f"no migrations applied (journal at seq {engine.seq})")
    if log.pending:
        steps = Table("due (UTC)", "market", "migration", "step")
        for s in log.pending:
            what = f"mode -> {s.mode}" if s.mode else f"fees {s.maker_fee_ppm}/{s.taker_fee_ppm} ppm"
            steps.add_row(_utc(s.at_ts), s.market, s.migration_id, f"{what} ({s.reason})")
        out.print(steps)


UrlOpt = Annotated[str, typer.Option("--url", envvar="BASTION_URL",
                                     help="The running node's gateway.")]
TokenOpt = Annotated[str, typer.Option("--token", envvar="BASTION_ADMIN_TOKEN",
                                       help="Operator token.")]


def _operator(method: str, url: str, token: str, path: str, **kw: Any) -> dict[str, Any]:
    """One operator API call; a refusal prints ``error: CODE: message`` (exit 1), no node
    answering prints NODE_UNREACHABLE (exit 2)."""
    import httpx

    try:
        r = httpx.request(method, url.rstrip("/") + path, timeout=60.0,
                          headers={"authorization": f"Bearer {token}"}, **kw)
    except httpx.HTTPError as exc:
        err.print(f"error: NODE_UNREACHABLE: no node answering at {url} ({exc}); this command "
                  "needs the running node", markup=False)
        raise typer.Exit(2) from None
    try:
        body: dict[str, Any] = r.json()
    except ValueError:
        body = {"code": f"HTTP_{r.status_code}", "message": r.text[:300]}
    if r.status_code >= 400:
        err.print(f"error: {body.get('code')}: {body.get('message')}", markup=False)
        raise typer.Exit(1)
    return body


@migrate_app.command("apply")
@clean_errors
def apply_cmd(
    file: FileArg,
    data: DataOpt = Path("data"),
    url: UrlOpt = "http://127.0.0.1:8080",
    token: TokenOpt = "",
    skip_dry_run: Annotated[bool, typer.Option(
        "--skip-dry-run", help="Apply without a dry-run (logged, and recorded in the "
                               "journal).")] = False,
    minutes: Annotated[int, typer.Option("--minutes", min=1, max=24 * 60)] = 10,
    max_refused_pct: Annotated[float, typer.Option("--max-refused-pct")] = 1.0,
    min_refused: Annotated[int, typer.Option("--min-refused")] = 5,
) -> None:
    """Dry-run the migration on a copy of live state, then apply it through the operator API
    as one journaled command (the node must be running)."""
    mig = _load(file)
    if skip_dry_run:
        note = "skipped by the operator (--skip-dry-run)"
        err.print(f"warning: applying {mig.id} WITHOUT a dry-run (--skip-dry-run); the journal "
                  "records that it was skipped", markup=False)
    else:
        rep = dry_run_dict(dry_run(mig, data, minutes=minutes, max_refused_pct=max_refused_pct,
                                   min_refused=min_refused))
        print_dry_run(rep)
        if not rep["ok"]:
            err.print(f"error: DRY_RUN_FAILED: {mig.id} was not applied", markup=False)
            raise typer.Exit(1)
        note = (f"passed on live seq {rep['live']['seq']}: {rep['window']['commands']} "
                f"commands replayed, {rep['cancelled_now']['count']} orders to cancel")
    reply = _operator("POST", url, token, "/admin/migrations", params={"dry_run": note},
                      content=file.read_bytes())
    events = reply.get("events", [])
    done: dict[str, Any] = next((e for e in events if e.get("type") == "MigrationApplied"), {})
    out.print(f"applied {mig.id} at seq {reply.get('seq')}: {len(events)} events, "
              f"{done.get('cancelled', 0)} orders cancelled, {done.get('scheduled', 0)} timed "
              "steps scheduled", markup=False)


@migrate_app.command("rollback")
def rollback_cmd(
    migration_id: Annotated[str, typer.Argument(help="Id of the latest applied migration.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (journaled).")],
    url: UrlOpt = "http://127.0.0.1:8080",
    token: TokenOpt = "",
) -> None:
    """Put back the metadata recorded before a migration, as another journaled command."""
    reply = _operator("POST", url, token, f"/admin/migrations/{migration_id}/rollback",
                      json={"reason": reason})
    out.print(f"rolled back {migration_id} at seq {reply.get('seq')}", markup=False)
