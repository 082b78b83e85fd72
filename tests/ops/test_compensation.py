"""Counterfactual compensation, the Paradex case end to end: 30 long/short pairs at 8x on a
perpetual with a large funding index; the index is reset to zero with the guards OFF, so the
cascade happens. The compensation report (journal replayed twice, as it happened and without
the corrupted command) must name exactly the accounts the corruption liquidated, with the
amounts that make each whole, checked against an independent clean run."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bastion.core import commands as C
from bastion.core import events as E
from bastion.core.engine import Engine
from bastion.drills import paradex_book as P
from bastion.node.node import Node
from bastion.ops.compensation import compensate
from bastion.ops.correction import Correction, Match, Override, Replace, load
from bastion.ops.report import write_reports

PAIRS = 30
START = 1_700_000_000_000
AFTER = 5  # feeder updates after the corruption


def after_steps() -> list[tuple[int, C.Command]]:
    return [(1_000, C.UpdateIndex(market=P.MARKET, sources=P.sources(P.PX, 0)))
            for _ in range(AFTER)]


def stamp_sources(cmd: C.Command, now: int) -> C.Command:
    if isinstance(cmd, C.UpdateIndex):
        for s in cmd.sources:
            s.ts = now
    return cmd


async def journal_incident(data: Path, guards: bool) -> tuple[int, int, Engine, list[E.Event]]:
    now = [START]
    events: list[E.Event] = []
    async with Node(data, clock=lambda: now[0]) as node:
        for dt, cmd in P.history(PAIRS, guards=guards, start_ms=START):
            now[0] += dt
            bad = [e for e in await node.submit(cmd) if isinstance(e, E.Rejected)]
            assert not bad, (cmd, bad)
        now[0] += 1_000
        corrupt = P.corruption()
        events += await node.submit(corrupt)
        for dt, cmd in after_steps():
            now[0] += dt
            events += await node.submit(stamp_sources(cmd, now[0]))
        return corrupt.seq, node.last_seq, node.engine, events


def clean_run() -> Engine:
    """The same history and traffic, stamped the same way, without the corrupted command."""
    eng = Engine()
    now, seq = START, 0
    steps = P.history(PAIRS, guards=False, start_ms=START)
    for dt, cmd in steps:
        now, seq = now + dt, seq + 1
        cmd.seq, cmd.ts = seq, now
        assert not [e for e in eng.apply(cmd) if isinstance(e, E.Rejected)]
    now, seq = now + 1_000, seq + 1          # where the corrupted command was
    for dt, cmd in after_steps():
        now, seq = now + dt, seq + 1
        cmd.seq, cmd.ts = seq, now
        eng.apply(stamp_sources(cmd, now))
    return eng


def value(eng: Engine, account: int, mark: int) -> int:
    pe = eng.perp
    ma = pe.margins.get((account, "USDT"))
    total = ma.collateral if ma else 0
    pos = pe.positions.get(P.MARKET, {}).get(account)
    if pos is not None:
        pm = pe.markets[P.MARKET]
        unsettled = -(-(pos.size * (pm.funding_index - pos.funding_index))
                      // (pm.price_div * 10**9))   # 0 when funding settles at each tick
        total += pos.size * mark // pm.price_div - pos.cost - unsettled
    return total


def drop_reset() -> Correction:
    return Correction(incident="paradex-2026-01-19", reason="funding index reset to zero",
                      drop=[Match(type="FundingTick", where={"index": 0})]).validate()


def test_compensation_names_exactly_the_liquidated_and_makes_them_whole(tmp_path: Path):
    fault_seq, last, live, events = asyncio.run(journal_incident(tmp_path / "data", False))
    liquidated = {e.account for e in events if isinstance(e, E.LiquidationStarted)}
    assert len(liquidated) >= PAIRS                  # the cascade happened
    report = compensate(tmp_path / "data", fault_seq, last, drop_reset())
    assert report.dropped == 1 and report.commands == 1 + AFTER
    owed = {a.account: a.owed.get("USDT", 0) for a in report.owed_accounts}
    assert set(owed) == liquidated                   # exactly the accounts liquidated
    clean = clean_run()
    mark = clean.perp.markets[P.MARKET].mark
    for account in liquidated:
        expected = value(clean, account, mark) - value(live, account, mark)
        assert expected > 0 and owed[account] == expected, account
    rows = {a.account: a for a in report.accounts}
    for account in liquidated:
        assert rows[account].liquidated and not rows[account].liquidated_if_corrected
        assert rows[account].liquidations_suffered == 1
        assert rows[account].positions[P.MARKET] > 0     # a short that was closed
        assert rows[account].funding_paid["USDT"] > 0    # it paid the reset
    assert report.totals_owed["USDT"] == sum(owed.values())
    # the files: JSON round-trips the numbers, CSV has a row per account, HTML one page
    files = write_reports(report, tmp_path / "out")
    data = json.loads(Path(files["json"]).read_text())
    assert sorted(data["owed_accounts"]) == sorted(liquidated)
    assert len(Path(files["csv"]).read_text().splitlines()) == len(report.accounts) + 1
    html = Path(files["html"]).read_text()
    assert "paradex-2026-01-19" in html and "<svg" in html


def test_with_guards_nothing_is_owed(tmp_path: Path):
    fault_seq, last, live, events = asyncio.run(journal_incident(tmp_path / "data", True))
    assert any(isinstance(e, E.GuardTripped) for e in events)
    assert not [e for e in events if isinstance(e, E.LiquidationStarted)]
    report = compensate(tmp_path / "data", fault_seq, last, drop_reset())
    assert report.owed_accounts == [] and report.totals_owed == {}


def test_parameter_override_is_a_correction_too(tmp_path: Path):
    """Turning the guards back on for the window (an override, nothing dropped) tells the
    same story: the halted market would have liquidated nobody."""
    fault_seq, last, _live, events = asyncio.run(journal_incident(tmp_path / "data", False))
    liquidated = {e.account for e in events if isinstance(e, E.LiquidationStarted)}
    fix = Correction(incident="x", reason="guards were off",
                     override=[Override(market=P.MARKET, fields={"guards": True})]).validate()
    report = compensate(tmp_path / "data", fault_seq, last, fix)
    assert report.dropped == 0 and {a.account for a in report.owed_accounts} == liquidated


def test_bad_corrections_are_clear_errors(tmp_path: Path):
    from bastion.journal.errors import DurabilityError

    bad = tmp_path / "bad.json"
    for body in ('{"incident": "x"}', '{"incident": "x", "reason": "y", "drop": [{}]}',
                 "not json", '{"incident": " ", "reason": "y"}',
                 '{"incident": "x", "reason": "y", "replace": [{"seq": 3}]}'):
        bad.write_text(body)
        with pytest.raises(DurabilityError) as err:
            load(bad)
        assert err.value.code == "BAD_CORRECTION", body
    fault_seq, last, _live, _ev = asyncio.run(journal_incident(tmp_path / "data", True))
    for fix in (Correction(incident="x", reason="y",
                           override=[Override(market="NOPE", fields={"guards": True})]),
                Correction(incident="x", reason="y",
                           override=[Override(market=P.MARKET, fields={"nope": 1})]),
                Correction(incident="x", reason="y", replace=[
                    Replace(seq=fault_seq, fields={"index": "zero"})])):
        with pytest.raises(DurabilityError) as err:
            compensate(tmp_path / "data", fault_seq, last, fix)
        assert err.value.code == "BAD_CORRECTION"
    for lo, hi, code in ((0, 3, "BAD_RANGE"), (5, 4, "BAD_RANGE"),
                         (1, last + 1, "SEQ_BEYOND_END")):
        with pytest.raises(DurabilityError) as err:
            compensate(tmp_path / "data", lo, hi, drop_reset())
        assert err.value.code == code


def test_compensate_cli_writes_the_three_files(tmp_path: Path):
    from typer.testing import CliRunner

    from bastion.cli.main import app

    fault_seq, last, _live, events = asyncio.run(journal_incident(tmp_path / "data", False))
    liquidated = {e.account for e in events if isinstance(e, E.LiquidationStarted)}
    fix = tmp_path / "fix.json"
    fix.write_text(json.dumps({"incident": "paradex-2026-01-19", "reason": "index reset",
                               "drop": [{"type": "FundingTick", "where": {"index": 0}}]}))
    out = tmp_path / "comp"
    result = CliRunner().invoke(app, ["compensate", "--data", str(tmp_path / "data"),
                                      "--from", str(fault_seq), "--to", str(last),
                                      "--correction", str(fix), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"{len(liquidated)} accounts owed" in result.output
    assert {p.name for p in out.iterdir()} == {"compensation.json", "compensation.csv",
                                               "compensation.html"}
    bad = CliRunner().invoke(app, ["compensate", "--data", str(tmp_path / "data"), "--from",
                                   "1", "--to", str(last + 5), "--correction", str(fix)])
    assert bad.exit_code == 2 and "SEQ_BEYOND_END" in bad.output
