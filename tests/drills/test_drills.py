"""Every drill in its short CI mode must PASS (each well under 60 s), through the real CLI:
a server subprocess, bots over HTTP, the fault, the operator kit, report.json and the PNG."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.drills import all_drills

SHORT = [(name, ()) for name in sorted(all_drills())]
#: drills whose guarded market can be built without guards: the cascade must be handled too
SHORT += [("paradex-2026-maintenance", ("--no-guards",))]


def run_drill(name: str, out: Path, *extra: str) -> tuple[int, dict, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", "drill", name, "--short", "--json",
         "--seed", "7", "--out", str(out), *extra],
        capture_output=True, text=True, timeout=120)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "{}"
    return proc.returncode, json.loads(last), proc.stdout + proc.stderr


@pytest.mark.parametrize(("name", "extra"), SHORT)
def test_drill_short_mode_passes(name: str, extra: tuple[str, ...], tmp_path: Path) -> None:
    rc, report, text = run_drill(name, tmp_path, *extra)
    assert rc == 0 and report["result"] == "PASS", text[-4000:]
    assert report["drill"] == name and report["checks"]
    for fig in ("valid_orders_refused", "acknowledged_commands_lost",
                "longest_order_entry_pause_s"):
        assert fig in report["figures"], fig
    assert report["figures"]["acknowledged_commands_lost"] == 0
    assert report["figures"]["orders_acknowledged"] > 50  # real traffic went through
    assert json.loads((tmp_path / "report.json").read_text())["result"] == "PASS"
    png = (tmp_path / "drill.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_unknown_drill_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "bastion.cli.main", "drill", "nope"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "UNKNOWN_DRILL" in proc.stderr
