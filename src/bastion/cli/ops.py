"""The operator kit on the command line: one command per emergency action, each a call to the
running node's operator API (``/admin/ops``), so it works against a remote deployment and goes
through the same validation and journal as everything else.

Errors print ``error: CODE: message`` and exit with status 2 (1 when the server refused).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

maintenance_app = typer.Typer(help="Maintenance windows: snapshot + modes + status page.",
                              no_args_is_help=True)

Url = Annotated[str, typer.Option("--url", envvar="BASTION_URL",
                                  help="Base URL of the running Bastion server.")]
Token = Annotated[str, typer.Option("--admin-token", envvar="BASTION_ADMIN_TOKEN",
                                    help="Operator token.", show_default=False)]
Markets = Annotated[list[str] | None, typer.Option("--market", "-m",
                                                   help="Market (repeatable; default: all).")]
Reason = Annotated[str, typer.Option("--reason", "-r", help="Why (journaled with the change).")]
DEFAULT_URL = "http://127.0.0.1:8080"


def call(url: str, token: str, method: str, path: str, body: Any = None) -> Any:
    if not token:
        typer.echo("error: NO_TOKEN: pass --admin-token or set BASTION_ADMIN_TOKEN", err=True)
        raise typer.Exit(2)
    try:
        resp = httpx.request(method, url.rstrip("/") + path, json=body, timeout=60,
                             headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        typer.echo(f"error: UNREACHABLE: {url}: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        data = resp.json()
    except ValueError:
        data = {"code": "BAD_RESPONSE", "message": resp.text[:200]}
    if resp.status_code >= 400:
        typer.echo(f"error: {data.get('code')}: {data.get('message')}", err=True)
        raise typer.Exit(1)
    return data


def show(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def halt_cmd(reason: Reason, markets: Markets = None, url: Url = DEFAULT_URL,
             token: Token = "") -> None:
    """Halt markets (all by default): no new orders, no matching, no liquidations."""
    show(call(url, token, "POST", "/admin/ops/modes",
              {"mode": "halted", "reason": reason, "markets": markets or []}))


def resume_cmd(reason: Reason, markets: Markets = None,
               recovery_s: Annotated[float, typer.Option(
                   "--recovery-s", help="Reopen in recovery for this long (0: straight to "
                                        "open).")] = 0.0,
               url: Url = DEFAULT_URL, token: Token = "") -> None:
    """Resume markets (all by default): to ``open``, or ``recovery`` for a set time first."""
    import time

    body: dict[str, Any] = {"mode": "open", "reason": reason, "markets": markets or []}
    if recovery_s > 0:
        body.update(mode="recovery", until_ms=int((time.time() + recovery_s) * 1000))
    show(call(url, token, "POST", "/admin/ops/modes", body))


def cancel_cmd(
    markets: Markets = None,
    accounts: Annotated[list[int] | None, typer.Option("--account", "-a")] = None,
    kinds: Annotated[list[str] | None, typer.Option(
        "--kind", help="limit, post_only, market, tp_sl (repeatable; default: all).")] = None,
    except_kinds: Annotated[list[str] | None, typer.Option(
        "--except-kind", help="Keep these kinds (e.g. tp_sl).")] = None,
    side: Annotated[str, typer.Option(help="buy or sell (default: both).")] = "",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count.")] = False,
    url: Url = DEFAULT_URL, token: Token = "",
) -> None:
    """Selective mass cancel of resting orders and TP/SL triggers (journaled)."""
    show(call(url, token, "POST", "/admin/ops/cancel", {
        "markets": markets or [], "accounts": accounts or [], "kinds": kinds or [],
        "except_kinds": except_kinds or [], "side": side, "dry_run": dry_run}))


def snapshot_online_cmd(
    name: Annotated[str, typer.Option(help="Snapshot name (kept by retention).")],
    url: Url = DEFAULT_URL, token: Token = "",
) -> None:
    """Named snapshot of the running node while trading continues (reports the pause)."""
    show(call(url, token, "POST", "/admin/ops/snapshots", {"name": name}))


@maintenance_app.command("begin")
def maintenance_begin(
    name: Annotated[str, typer.Option(help="Name (also the snapshot's name).")],
    reason: Reason, markets: Markets = None,
    mode: Annotated[str, typer.Option(help="Mode for the markets (default: unchanged).")] = "",
    minutes: Annotated[int, typer.Option(help="Announced length.")] = 30,
    url: Url = DEFAULT_URL, token: Token = "",
) -> None:
    """Snapshot named NAME, markets to MODE, the status page's maintenance opened."""
    show(call(url, token, "POST", "/admin/ops/maintenance", {
        "name": name, "reason": reason, "markets": markets or [], "mode": mode,
        "minutes": minutes}))


@maintenance_app.command("end")
def maintenance_end(url: Url = DEFAULT_URL, token: Token = "") -> None:
    """Markets back to their modes, the status maintenance completed."""
    show(call(url, token, "DELETE", "/admin/ops/maintenance"))


@maintenance_app.command("show")
def maintenance_show(url: Url = DEFAULT_URL, token: Token = "") -> None:
    show(call(url, token, "GET", "/admin/ops/maintenance"))


def compensate_cmd(
    from_seq: Annotated[int, typer.Option("--from", help="First seq of the incident window.")],
    to_seq: Annotated[int, typer.Option("--to", help="Last seq of the window.")],
    correction: Annotated[Path, typer.Option(help="Correction file (JSON).")],
    data: Annotated[Path, typer.Option("--data", envvar="BASTION_DATA")] = Path("data"),
    out: Annotated[Path, typer.Option(help="Where the CSV/JSON/HTML go.")] = Path("compensation"),
    apply: Annotated[bool, typer.Option("--apply", help="Journal the credits (idempotent).")]
    = False,
    url: Url = DEFAULT_URL, token: Token = "",
) -> None:
    """Replay the window as it happened and as corrected; per-account differences and what
    makes each account whole. Read-only unless --apply."""
    from bastion.cli.errors import clean_errors
    from bastion.ops.compensation import compensate
    from bastion.ops.correction import load
    from bastion.ops.report import units, write_reports

    @clean_errors
    def run() -> None:
        report = compensate(data, from_seq, to_seq, load(correction))
        files = write_reports(report, out)
        owed = report.owed_accounts
        total = ", ".join(f"{units(v, report.decimals.get(k, 0))} {k}"
                          for k, v in sorted(report.totals_owed.items())) or "nothing"
        typer.echo(f"{report.incident}: {report.commands} commands replayed twice in "
                   f"{report.seconds:.2f} s; {len(owed)} accounts owed {total}")
        for what, where in sorted(files.items()):
            typer.echo(f"{what}: {where}")
        if apply:
            credits = [{"account": a.account, "asset": asset,
                        "amount": units(amount, report.decimals.get(asset, 0))}
                       for a in owed for asset, amount in sorted(a.owed.items())]
            show(call(url, token, "POST", "/admin/ops/credits", {
                "incident": report.incident, "reason": report.reason, "credits": credits}))

    run()
