"""``bastion migrate apply / rollback / history`` against a running server: dry-run first,
the operator API, one journaled command, refusals that change nothing, rollback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from serverproc import ADMIN, Admin, Client, free_port, running

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "migrations"
GOOD = EXAMPLES / "2026-12-fee-holiday-and-sol.toml"
FAULTY = EXAMPLES / "2026-12-btc-tick-coarsen.toml"
QUIET = {"BASTION_RATE_KEY": "0", "BASTION_RATE_IP": "0", "BASTION_FEEDER_INTERVAL": "0",
         "BASTION_DEMO_TRAFFIC": "0"}


def bastion(*args: str, url: str = "") -> subprocess.CompletedProcess[str]:
    env = {"COLUMNS": "200", "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "BASTION_ADMIN_TOKEN": ADMIN, "BASTION_URL": url}
    return subprocess.run([sys.executable, "-m", "bastion.cli.main", *args],
                          capture_output=True, text=True, timeout=300, env=env)


def test_apply_refuse_and_roll_back_through_the_running_node(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running(data, **QUIET) as srv:
        admin = Admin(srv.url)
        trader = admin.new_account(77)
        for i in range(6):  # resting orders off a 1.00 grid
            r = trader.place(market="BTC-USDT", side="buy", price=f"40000.0{i + 1}",
                             quantity="0.001", client_order_id=f"off-{i}")
            assert r.status_code == 201, r.text
        markets_before = httpx.get(srv.url + "/v1/markets").json()

        bad = bastion("migrate", "apply", str(FAULTY), "--data", str(data), url=srv.url)
        assert bad.returncode == 1, bad.stdout + bad.stderr
        assert "DRY_RUN_FAILED" in bad.stderr and "MIGRATION_CONFLICT" in bad.stdout
        forced = bastion("migrate", "apply", str(FAULTY), "--skip-dry-run", url=srv.url)
        assert forced.returncode == 1 and "WITHOUT a dry-run" in forced.stderr
        assert "error: MIGRATION_CONFLICT: changes[0].on_conflict: 6 resting order(s)" \
            in forced.stderr
        assert admin.get("/admin/migrations").json()["records"] == []

        good = bastion("migrate", "apply", str(GOOD), "--data", str(data), url=srv.url)
        assert good.returncode == 0, good.stdout + good.stderr
        assert "OK: safe to apply" in good.stdout and "applied 2026-12-fee-holiday-and-sol" \
            in good.stdout
        listed = admin.get("/admin/migrations").json()
        (record,) = listed["records"]
        assert record["dry_run"].startswith("passed on live seq")
        assert {s["market"] for s in listed["pending"]} == {"BTC-USDT", "ETH-USDT"}
        sol = httpx.get(srv.url + "/v1/markets/SOL-USDT").json()
        assert sol["tick_size"] == "0.01" and sol["quote"] == "USDT"
        btc = httpx.get(srv.url + "/v1/markets/BTC-USDT").json()
        assert float(btc["taker_fee"]) == float(btc["maker_fee"]) == 0  # the fee holiday
        again = bastion("migrate", "apply", str(GOOD), "--skip-dry-run", url=srv.url)
        assert again.returncode == 1 and "MIGRATION_APPLIED" in again.stderr

        raw = httpx.post(srv.url + "/admin/migrations", content=b"format = 1\nid = 3\n",
                         headers={"authorization": f"Bearer {ADMIN}"})
        assert raw.status_code == 400 and raw.json()["code"] == "MIGRATION_INVALID"
        assert raw.json()["message"].startswith("id: Expected `str`, got `int`")
        assert Client(srv.url).post("/admin/migrations", b"x").status_code == 401

        back = bastion("migrate", "rollback", "2026-12-fee-holiday-and-sol", "--reason", "test",
                       url=srv.url)
        assert back.returncode == 0, back.stderr
        assert httpx.get(srv.url + "/v1/markets").json() == markets_before
        assert httpx.get(srv.url + "/v1/markets/SOL-USDT").status_code == 404
        history = bastion("migrate", "history", "--data", str(data), "--json")
        assert json.loads(history.stdout)["records"][0]["rolled_back_seq"] > 0
        health = admin.get("/admin/health").json()
        assert health["invariants_ok"], health["problems"]
    closed = bastion("migrate", "rollback", "x", "--reason", "r",
                     url=f"http://127.0.0.1:{free_port()}")
    assert closed.returncode == 2 and "NODE_UNREACHABLE" in closed.stderr
