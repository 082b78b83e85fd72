"""freqtrade, unmodified, trading live (``dry_run: false``) against Bastion, spot and futures.

    .venv/bin/python tests/freqtrade_e2e.py                  # both modes
    .venv/bin/python tests/freqtrade_e2e.py --mode futures --venv /tmp/ft-venv

Not part of ``make test``: freqtrade and its dependencies (pandas, numpy, TA-Lib, ...) take
minutes to install, so this script keeps its own virtualenv (``--venv``, default
``.freqtrade-venv``, created and filled with ``freqtrade==2026.9`` on first use). For each mode
it starts a Bastion server, seeds a little trading history (freqtrade needs candles) and
resting liquidity from a second account, points every ccxt URL of freqtrade's exchange (REST
and WebSocket) at the server, and runs ``freqtrade trade`` with a strategy that enters at
once. It passes when freqtrade has started, loaded markets, placed an entry order that
filled on Bastion, and recorded the fill in its own database (an open trade whose entry
order is closed with the filled amount). Exit status 0 on success, 1 with the log tail
otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from serverproc import DEMO_KEY, DEMO_SECRET, Admin, Server, running  # noqa: E402

FREQTRADE = "freqtrade==2026.9"

STRATEGY = '''
from pandas import DataFrame
from freqtrade.strategy import IStrategy


class BastionProbe(IStrategy):
    """Enters at once (every candle signals), never exits on its own."""
    INTERFACE_VERSION = 3
    timeframe = "1m"
    can_short = False
    minimal_roi = {"0": 100}
    stoploss = -0.99
    startup_candle_count = 0
    process_only_new_candles = False

    def populate_indicators(self, df: DataFrame, metadata: dict) -> DataFrame:
        return df

    def populate_entry_trend(self, df: DataFrame, metadata: dict) -> DataFrame:
        df["enter_long"] = 1
        return df

    def populate_exit_trend(self, df: DataFrame, metadata: dict) -> DataFrame:
        df["exit_long"] = 0
        return df
'''


def ensure_venv(path: Path) -> Path:
    exe = path / "bin" / "freqtrade"
    if exe.exists():
        return exe
    print(f"creating {path} and installing {FREQTRADE} (takes a few minutes)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run([str(path / "bin" / "python"), "-m", "pip", "install", "-q", FREQTRADE],
                   check=True)
    return exe


def ccxt_urls(base: str, futures: bool) -> dict[str, Any]:
    """Every REST URL of ccxt's binance class with its host replaced, plus the streams."""
    import ccxt

    ex = ccxt.binanceusdm() if futures else ccxt.binance()
    api: dict[str, Any] = {name: base + urlparse(url).path
                           for name, url in ex.urls["api"].items() if isinstance(url, str)}
    ws = base.replace("http://", "ws://", 1)
    api["ws"] = {"spot": ws + "/stream/ws", "margin": ws + "/stream/ws",
                 "linear": ws + "/fstream/ws", "inverse": ws + "/dstream/ws",
                 "ws-api": {"spot": ws + "/ws-api/v3"}}
    return {"urls": {"api": api}}


def config(base: str, workdir: Path, futures: bool) -> Path:
    urls = ccxt_urls(base, futures)
    pair = "BTC/USDT:USDT" if futures else "BTC/USDT"
    cfg: dict[str, Any] = {
        "max_open_trades": 1, "stake_currency": "USDT", "stake_amount": 200,
        "tradable_balance_ratio": 0.99, "fiat_display_currency": "", "dry_run": False,
        "timeframe": "1m", "trading_mode": "futures" if futures else "spot",
        "cancel_open_orders_on_exit": False, "unfilledtimeout": {"entry": 10, "exit": 10},
        "entry_pricing": {"price_side": "other", "use_order_book": True,
                          "order_book_top": 1, "price_last_balance": 0.0},
        "exit_pricing": {"price_side": "other", "use_order_book": True, "order_book_top": 1},
        "order_types": {"entry": "market", "exit": "market", "stoploss": "market",
                        "stoploss_on_exchange": False},
        "exchange": {"name": "binance", "key": DEMO_KEY, "secret": DEMO_SECRET,
                     "ccxt_config": urls, "ccxt_async_config": urls,
                     "pair_whitelist": [pair], "pair_blacklist": []},
        "pairlists": [{"method": "StaticPairList"}],
        "bot_name": "bastion-probe", "initial_state": "running", "force_entry_enable": True,
        "internals": {"process_throttle_secs": 2}, "strategy": "BastionProbe",
        "strategy_path": str(workdir), "db_url": f"sqlite:///{workdir / 'trades.sqlite'}",
        "user_data_dir": str(workdir / "user_data"),
    }
    if futures:
        cfg["margin_mode"] = "cross"
    (workdir / "user_data").mkdir(exist_ok=True)
    (workdir / "bastion_probe.py").write_text(STRATEGY)
    path = workdir / "config.json"
    path.write_text(json.dumps(cfg, indent=1))
    return path


def seed(srv: Server, futures: bool) -> float:
    """A few trades (so candles exist) and resting liquidity on both sides from account 901.
    Returns the price the liquidity sits around."""
    import httpx

    admin = Admin(srv.url)
    maker = admin.new_account(901, {"USDT": "50000000", "BTC": "5000", "ETH": "5000"})
    taker = admin.new_account(902, {"USDT": "50000000", "BTC": "5000", "ETH": "5000"})
    market = "BTC-USDT-PERP" if futures else "BTC-USDT"
    mid = 50_000.0
    if futures:
        for c in (maker, taker):
            assert c.post("/v1/margin", {"asset": "USDT", "amount": "5000000"}).status_code \
                == 200
        mid = float(httpx.get(srv.url + "/fapi/v1/premiumIndex",
                              params={"symbol": "BTCUSDT"}).json()["markPrice"])
    mid = round(mid)
    for i in range(5):  # trades: a price history to build candles from
        maker.place(market=market, side="sell", quantity="0.01", price=f"{mid + i}")
        taker.place(market=market, side="buy", quantity="0.01", price=f"{mid + i}")
    for i in range(1, 6):  # depth for the bot's market orders, both ways
        assert maker.place(market=market, side="sell", quantity="1", price=f"{mid + 10 * i}"
                           ).status_code in (200, 201)
        assert maker.place(market=market, side="buy", quantity="1", price=f"{mid - 10 * i}"
                           ).status_code in (200, 201)
    return mid


def filled_trade(db: Path) -> dict[str, Any] | None:
    if not db.exists():
        return None
    try:
        with sqlite3.connect(db) as con:
            rows = con.execute(
                "SELECT t.id, t.pair, t.amount, o.status, o.filled, o.order_id FROM trades t "
                "JOIN orders o ON o.ft_trade_id = t.id WHERE o.ft_order_side = 'buy' "
                "AND o.status = 'closed' AND o.filled > 0").fetchall()
    except sqlite3.Error:
        return None
    if not rows:
        return None
    tid, pair, amount, status, filled, oid = rows[0]
    return {"trade": tid, "pair": pair, "amount": amount, "status": status, "filled": filled,
            "order_id": oid}


def run_mode(exe: Path, futures: bool, timeout: float) -> bool:
    name = "futures" if futures else "spot"
    with tempfile.TemporaryDirectory(prefix=f"ft-{name}-") as tmp:
        work = Path(tmp)
        with running(work / "data") as srv:
            mid = seed(srv, futures)
            cfg = config(srv.url, work, futures)
            log = work / "freqtrade.log"
            t0 = time.monotonic()
            proc = subprocess.Popen([str(exe), "trade", "--config", str(cfg), "--logfile",
                                     str(log)], cwd=work, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.STDOUT, env=dict(os.environ))
            found = None
            try:
                while time.monotonic() - t0 < timeout and proc.poll() is None:
                    found = filled_trade(work / "trades.sqlite")
                    if found:
                        break
                    time.sleep(1)
            finally:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            text = log.read_text(errors="replace") if log.exists() else ""
            if found is None:
                print(f"[{name}] FAILED after {time.monotonic() - t0:.0f} s; freqtrade log "
                      "tail:\n" + "\n".join(text.splitlines()[-40:]))
                return False
            oid = int(found["order_id"])
            path = "/fapi/v1/order" if futures else "/api/v3/order"
            from ccxt_support import binance, binanceusdm

            ex = (binanceusdm if futures else binance)(srv.url, DEMO_KEY, DEMO_SECRET)
            order = ex.fetch_order(str(oid), "BTC/USDT:USDT" if futures else "BTC/USDT")
            assert order["status"] == "closed", order
            assert abs(order["filled"] - float(found["filled"])) < 1e-9, (order, found)
            print(f"[{name}] OK in {time.monotonic() - t0:.0f} s: freqtrade started, loaded "
                  f"markets, entered {found['pair']} with order {oid} ({path}), filled "
                  f"{found['filled']} near {mid}; Bastion reports it {order['status']}")
            return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=["spot", "futures", "both"], default="both")
    ap.add_argument("--venv", type=Path, default=ROOT / ".freqtrade-venv")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds per mode")
    a = ap.parse_args()
    exe = ensure_venv(a.venv)
    modes = {"spot": [False], "futures": [True], "both": [False, True]}[a.mode]
    ok = all([run_mode(exe, futures, a.timeout) for futures in modes])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
