"""Shadow runs: a real journal, candidate engines in their own processes, the CLI's verdict."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.core import events as E
from bastion.core.codec import decode_command
from bastion.core.engine import Engine
from bastion.core.rules import PPM
from bastion.journal.local import LocalJournal
from bastion.node import Node, NodeConfig
from bastion.node.workload import SpotWorkload, spot_setup
from bastion.ops.shadow import current_source

CFG = NodeConfig(snapshot_every_commands=0, snapshot_every_seconds=0, progress=False)
REPO = Path(__file__).resolve().parents[2]
ROUND_DOWN = "        return mul(notional, rate_ppm) // PPM\n"
ROUND_UP = "        return -(mul(-notional, rate_ppm) // PPM)\n"


def bastion(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bastion.cli.main", *args],
                          capture_output=True, text=True, timeout=300,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def shard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("shadow") / "shard"

    async def build() -> None:
        async with Node(data, config=CFG) as node:
            await node.submit_many(spot_setup(6))
            work = SpotWorkload(12, accounts=6)
            await node.submit_many(work.batch(400))
            await node.snapshot("mid")
            await node.submit_many(work.batch(400))

    asyncio.run(build())
    return data


def _copy_source(dest: Path) -> Path:
    shutil.copytree(current_source() / "bastion", dest / "src" / "bastion",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _first_inexact_fee_seq(data: Path) -> int:
    """Independently: the first command whose trade fee is not a whole unit (rounding shows)."""
    engine = Engine()
    with LocalJournal(data / "journal", readonly=True) as journal:
        for _, payload in journal.read(1):
            for ev in engine.apply(decode_command(payload)):
                if isinstance(ev, E.Trade):
                    mkt = engine.markets[ev.market]
                    notional = ev.price * ev.qty // mkt.price_div
                    if notional * mkt.taker_fee_ppm % PPM or notional * mkt.maker_fee_ppm % PPM:
                        return ev.seq
    raise AssertionError("workload produced no trade with an inexact fee")


def test_clean_candidate_from_git_ref_passes(shard: Path, tmp_path: Path) -> None:
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    clean = _copy_source(tmp_path / "same")
    run = bastion("shadow", "--candidate", str(clean), "--data", str(shard), "--json",
                  "--hash-every", "100")
    assert run.returncode == 0, run.stdout + run.stderr
    rep = json.loads(run.stdout)
    with LocalJournal(shard / "journal", readonly=True) as journal:
        last = journal.last_seq
    assert rep["ok"] and rep["commands"] == rep["range"][1] == last
    assert rep["hash_checks"] == last // 100 + 1 and rep["hash_mismatches"] == 0
    assert rep["runs"]["candidate"]["final_hash"] == rep["runs"]["baseline"]["final_hash"]
    assert rep["runs"]["candidate"]["source"] == str(clean.resolve())
    ref = bastion("shadow", "--candidate", "HEAD", "--repo", str(REPO), "--data", str(shard),
                  "--from-snapshot", "mid")
    assert ref.returncode == 0, ref.stdout + ref.stderr
    assert "OK: no unexplained differences" in ref.stdout


def test_fee_rounding_flip_is_caught_at_its_first_event(shard: Path, tmp_path: Path) -> None:
    faulty = _copy_source(tmp_path / "faulty")
    engine_py = faulty / "src" / "bastion" / "core" / "rules.py"
    text = engine_py.read_text()
    assert text.count(ROUND_DOWN) == 1, "fee_amount changed shape; update this test"
    engine_py.write_text(text.replace(ROUND_DOWN, ROUND_UP))
    run = bastion("shadow", "--candidate", str(faulty), "--data", str(shard), "--json")
    assert run.returncode == 1, run.stdout + run.stderr
    rep = json.loads(run.stdout)
    first = rep["first_divergence"]
    assert first["seq"] == _first_inexact_fee_seq(shard)
    assert "Trade" in first["unexplained"]
    assert {f.rsplit(".", 1)[1] for f in first["differing_fields"]} <= {"maker_fee", "taker_fee"}
    fees = [(e["maker_fee"], e["taker_fee"]) for e in first["baseline"] if e["type"] == "Trade"]
    flipped = [(e["maker_fee"], e["taker_fee"]) for e in first["candidate"]
               if e["type"] == "Trade"]
    assert fees != flipped and all(b >= a for x, y in zip(fees, flipped, strict=True)
                                   for a, b in zip(x, y, strict=True))
    assert rep["unexplained_by_event"]["Trade"] >= 1
    human = bastion("shadow", "--candidate", str(faulty), "--data", str(shard))
    assert human.returncode == 1
    assert f"first divergence at seq {first['seq']}" in human.stdout
    assert "FAIL: unexplained differences" in human.stdout

    intended = tmp_path / "intended.toml"
    intended.write_text('[[difference]]\nevent = "Trade"\nfields = ["maker_fee", "taker_fee"]\n'
                        'reason = "fees round up from now on"\n')
    declared = bastion("shadow", "--candidate", str(faulty), "--data", str(shard), "--json",
                       "--intended", str(intended))
    rep2 = json.loads(declared.stdout)
    assert rep2["intended_by_event"]["Trade"] >= rep["unexplained_by_event"]["Trade"] > 0
    assert "Trade" not in rep2["unexplained_by_event"]
    assert declared.returncode == (0 if rep2["ok"] else 1)


def test_bad_inputs_get_clear_errors(shard: Path, tmp_path: Path) -> None:
    nothing = bastion("shadow", "--candidate", "no-such-ref-xyz", "--repo", str(REPO),
                      "--data", str(shard))
    assert nothing.returncode == 2 and "SHADOW_INPUT" in nothing.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[[difference]]\nevent = "Trade"\ncolour = "red"\nreason = "x"\n')
    rules = bastion("shadow", "--candidate", str(current_source().parent), "--data", str(shard),
                    "--intended", str(bad))
    assert rules.returncode == 2 and "colour" in rules.stderr
    beyond = bastion("shadow", "--candidate", str(current_source().parent), "--data",
                     str(shard), "--to-seq", "99999")
    assert beyond.returncode == 2 and "SEQ_BEYOND_END" in beyond.stderr
