"""``bastion upgrade`` on a real cluster under load: to a candidate and back, nothing
acknowledged lost, the switchover pause reported; a faulty candidate is refused at the
shadow-check with nothing started."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from bastion.cluster.supervisor import ClusterState
from bastion.ops.shadow import current_source
from cluster_harness import Load, check_stream, running

ROUND_DOWN = "        return mul(notional, rate_ppm) // PPM\n"
ROUND_UP = "        return -(mul(-notional, rate_ppm) // PPM)\n"


def _source(dest: Path, faulty: bool = False) -> Path:
    shutil.copytree(current_source() / "bastion", dest / "src" / "bastion",
                    ignore=shutil.ignore_patterns("__pycache__"))
    if faulty:
        rules = dest / "src" / "bastion" / "core" / "rules.py"
        assert ROUND_DOWN in rules.read_text()
        rules.write_text(rules.read_text().replace(ROUND_DOWN, ROUND_UP))
    return dest


def _upgrade(env: dict[str, str], *args: str) -> tuple[int, dict[str, object], str]:
    proc = subprocess.run([sys.executable, "-m", "bastion.cli.main", "upgrade", "--json",
                           "--timeout", "60", *args], capture_output=True, text=True,
                          timeout=300, env=env)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "{}"
    return proc.returncode, json.loads(last), proc.stdout + proc.stderr


def _kill_nodes(root: Path) -> None:
    """Nodes ``upgrade`` started are not the harness's children: stop them by pid."""
    for p in ClusterState.load(root).processes:
        if p.kind == "node":
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)


def test_upgrade_and_back_under_load_lose_nothing(tmp_path: Path) -> None:
    root = tmp_path / "cluster"
    clean = _source(tmp_path / "next")
    faulty = _source(tmp_path / "bad", faulty=True)
    with running(root, nodes=1, gateways=1) as cluster:
        try:
            load = Load([cluster.url()], threads=2).start()
            load.wait_acks(30)
            trades = _trade(cluster.url())
            rc, rep, text = _upgrade(cluster.env, "--data", str(root), "--candidate", str(faulty))
            assert rc == 1 and not rep["ok"], text[-2000:]
            assert [s["name"] for s in rep["steps"]] == ["shadow-check"], rep["steps"]
            assert len([p for p in ClusterState.load(root).processes if p.kind == "node"]) == 1
            assert trades > 0

            rc, rep, text = _upgrade(cluster.env, "--data", str(root), "--candidate", str(clean))
            assert rc == 0 and rep["ok"], text[-3000:]
            assert isinstance(rep["pause_ms"], int | float) and 0 < rep["pause_ms"] < 10_000
            load.wait_acks(30)
            rc, back, text = _upgrade(cluster.env, "--data", str(root), "--back")
            assert rc == 0 and back["ok"], text[-3000:]
            assert back["target"]["label"] == "installed"
            assert back["pause_ms"] is not None
            load.wait_acks(30)
            load.stop()
            check_stream(cluster, load)  # every acknowledged order is in the stream, in order
            assert load.count() > 90
            nodes = [p.name for p in ClusterState.load(root).processes if p.kind == "node"]
            assert len(nodes) == 3 and all(
                s["ok"] for s in back["steps"]) and len(back["steps"]) == 4 + 2
        finally:
            _kill_nodes(root)


def _trade(url: str) -> int:
    """A few trades between two accounts, so a fee rounding change shows in the stream."""
    from serverproc import Admin

    admin = Admin(url)
    buyer, seller = admin.new_account(501), admin.new_account(502)
    done = 0
    try:
        for i in range(4):
            sold = seller.place(market="BTC-USDT", side="sell", price="50000.07",
                                quantity="0.00337", client_order_id=f"s{i}")
            bought = buyer.place(market="BTC-USDT", side="buy", price="50000.07",
                                 quantity="0.00337", client_order_id=f"b{i}")
            done += sold.status_code == bought.status_code == 201
    finally:
        buyer.close()
        seller.close()
    return done
