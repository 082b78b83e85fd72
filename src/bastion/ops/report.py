"""Compensation report files: JSON (everything), CSV (one row per account), and a one-page
HTML summary (totals, top accounts, a histogram of amounts owed) with no external assets."""

from __future__ import annotations

import csv
import html
import json
from decimal import Decimal
from pathlib import Path

from bastion.ops.compensation import AccountDiff, CompensationReport

TOP = 20
BINS = 10


def units(amount: int, decimals: int) -> str:
    return f"{Decimal(amount).scaleb(-decimals):f}"


def write_reports(report: CompensationReport, out: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "compensation.json", "csv": out / "compensation.csv",
             "html": out / "compensation.html"}
    paths["json"].write_text(json.dumps(report.to_builtins(), indent=1, sort_keys=True) + "\n")
    _csv(report, paths["csv"])
    paths["html"].write_text(_html(report))
    return {k: str(v) for k, v in paths.items()}


def _flat(d: dict[str, int]) -> str:
    return ";".join(f"{k}={v}" for k, v in sorted(d.items()))


def _csv(report: CompensationReport, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["account", "owed", "liquidated", "liquidated_if_corrected",
                    "liquidations_suffered", "value_diff", "balance_diff", "position_diff",
                    "realized_pnl_diff", "fees_diff", "funding_paid_diff"])
        for a in report.accounts:
            w.writerow([a.account, _flat(a.owed), int(a.liquidated),
                        int(a.liquidated_if_corrected), a.liquidations_suffered,
                        _flat(a.value), _flat(a.balances), _flat(a.positions),
                        _flat(a.realized_pnl), _flat(a.fees), _flat(a.funding_paid)])


def _histogram(amounts: list[int], width: int = 520, height: int = 140) -> str:
    if not amounts:
        return "<p>No account is owed anything.</p>"
    top = max(amounts)
    step = max(1, -(-top // BINS))
    counts = [0] * BINS
    for v in amounts:
        counts[min((v - 1) // step, BINS - 1)] += 1
    peak = max(counts)
    bw = width // BINS
    bars = "".join(
        f'<rect x="{i * bw + 2}" y="{height - 20 - c * (height - 30) // peak}" width="{bw - 4}" '
        f'height="{c * (height - 30) // peak}" fill="#3a7"><title>{c} accounts</title></rect>'
        f'<text x="{i * bw + bw // 2}" y="{height - 5}" font-size="9" text-anchor="middle">'
        f"{c}</text>" for i, c in enumerate(counts))
    return (f'<svg width="{width}" height="{height}" role="img" '
            f'aria-label="histogram of amounts owed">{bars}</svg>')


def _html(report: CompensationReport) -> str:
    dec = report.decimals
    owed = sorted(report.owed_accounts, key=lambda a: -sum(a.owed.values()))

    def money(d: dict[str, int]) -> str:
        return ", ".join(f"{units(v, dec.get(k, 0))} {html.escape(k)}"
                         for k, v in sorted(d.items())) or "0"

    def row(a: AccountDiff) -> str:
        return (f"<tr><td>{a.account}</td><td>{money(a.owed)}</td>"
                f"<td>{'yes' if a.liquidated else 'no'}</td>"
                f"<td>{'yes' if a.liquidated_if_corrected else 'no'}</td>"
                f"<td>{money(a.funding_paid)}</td><td>{money(a.fees)}</td></tr>")

    settle = max(report.totals_owed, key=lambda k: report.totals_owed[k], default="")
    amounts = [a.owed.get(settle, 0) for a in owed if a.owed.get(settle, 0) > 0]
    e = html.escape
    return f"""<!doctype html><meta charset="utf-8"><title>Compensation {e(report.incident)}</title>
<style>body{{font:14px system-ui,sans-serif;max-width:900px;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}</style>
<h1>Compensation: {e(report.incident)}</h1>
<p>{e(report.reason)}. Window seq {report.from_seq}..{report.to_seq} ({report.commands} commands;
{report.dropped} dropped, {report.replaced} replaced, {report.overrides} parameter overrides),
replayed as it happened and as corrected in {report.seconds:.2f} s.</p>
<h2>Totals</h2>
<p><b>{len(owed)}</b> accounts owed <b>{money(report.totals_owed)}</b>;
{sum(1 for a in report.accounts if a.liquidated and not a.liquidated_if_corrected)} liquidated
only because of the incident; insurance fund difference {money(report.insurance_fund_delta)}.</p>
<h2>Amounts owed ({e(settle) or "none"})</h2>{_histogram(amounts)}
<h2>Top accounts</h2>
<table><tr><th>account</th><th>owed</th><th>liquidated</th><th>liquidated if corrected</th>
<th>funding paid (diff)</th><th>fees (diff)</th></tr>
{"".join(row(a) for a in owed[:TOP])}</table>
<p>Full list: compensation.csv and compensation.json.</p>
"""
