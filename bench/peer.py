"""Bastion against PyPI ``matching-engine`` 0.1.1 on the same churn stream, side by side.

    python bench/peer.py --ops 200000 --repeat 5

The stream is ``bench/core.py``'s churn (40% cancels of live orders, the book near 5k orders,
accounts, holds and fees on in Bastion). It is replayed once through Bastion to learn the
order id each placement gets, then translated for ``matching-engine`` (same ids, accounts,
sides, integer prices, quantities in lots, cancel-taker self-trade prevention as Bastion's
default). ``matching-engine`` needs Python >= 3.12: this script builds its own venv
(``.venv/peer312``) from a 3.12+ interpreter if one exists, else says so and skips it.

Each run is a fresh process per engine (same interpreter, same pre-built command objects,
timed loop only); runs alternate Bastion / peer so machine noise hits both alike. Printed:
every run, the best of N for each and the ratio of the bests. Bastion's compiled core
(``bastion.corebuild``) is built for the 3.12 venv too (``--pure-312`` skips that), and
Bastion is also timed in this interpreter (the project's venv), compiled and pure
(``BASTION_PURE=1``), with the build each run loaded. ``--cpu-time`` times the loops in each
worker's process CPU time (for a loaded machine).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = ROOT / ".venv" / "peer312"
PEER_PACKAGE = "matching-engine==0.1.1"
#: the timer of the timed loops: wall clock, or the worker's process CPU time (``--cpu-time``:
#: on a loaded machine it leaves out the time other processes held the core)
CLOCK = time.perf_counter


# ---------------------------------------------------------------------- the workers

def _bastion_worker(path: Path, src: Path) -> float:
    sys.path.insert(0, str(src))
    from bastion.core.codec import decode_command
    from bastion.core.engine import Engine
    from bastion.demo import demo_setup, stamp

    data = json.loads(path.read_text())
    engine = Engine()
    for cmd in stamp(demo_setup(list(range(1, data["accounts"] + 1)))):
        engine.apply(cmd)
    stream = [decode_command(bytes.fromhex(h)) for h in data["bastion"]]
    gc.collect()
    gc.freeze()
    apply = engine.apply
    t0 = CLOCK()
    for cmd in stream:
        apply(cmd)
    elapsed = CLOCK() - t0
    gc.unfreeze()
    assert not engine.check_invariants()
    return len(stream) / elapsed


def _peer_worker(path: Path) -> float:
    from matching_engine.domain import (  # type: ignore[import-not-found]
        CancelOrder,
        NewOrder,
        SelfTradePrevention,
        SequencedCommand,
        Side,
    )
    from matching_engine.engine import MatchingEngine  # type: ignore[import-not-found]

    data = json.loads(path.read_text())
    stream = []
    for i, row in enumerate(data["peer"], 1):
        if row[0] == "new":
            _, oid, account, side, price, lots = row
            cmd = NewOrder(oid, account, Side.BUY if side == "buy" else Side.SELL, price, lots,
                           stp=SelfTradePrevention.CANCEL_TAKER)
        else:
            _, oid, account = row
            cmd = CancelOrder(oid, account)
        stream.append(SequencedCommand(i, i, cmd))
    engine = MatchingEngine()
    gc.collect()
    gc.freeze()
    process = engine.process
    t0 = CLOCK()
    for sc in stream:
        process(sc)
    elapsed = CLOCK() - t0
    gc.unfreeze()
    return len(stream) / elapsed


# ---------------------------------------------------------------------- the parent

def _python312() -> str | None:
    """A working interpreter >= 3.12 (pyenv shims may name versions that are not installed)."""
    names = [shutil.which(n) for n in ("python3.12", "python3.13", "python3.14")]
    found = [*names, *map(str, sorted(Path("/root/.pyenv/versions").glob("3.1[2-9]*/bin/python3")))]
    for candidate in filter(None, found):
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info >= (3, 12))"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return candidate
    return None


def peer_python() -> str | None:
    """The peer venv's interpreter, created on first use; None (with a reason) if impossible."""
    py = PEER_VENV / "bin" / "python"
    stamp = PEER_VENV / ".installed-3"  # 3: Bastion's runtime needs and its compiler (mypyc)
    if py.exists() and stamp.exists():
        return str(py)
    base = _python312()
    if base is None:
        print("peer: no Python >= 3.12 on this machine; matching-engine needs it: skipped")
        return None
    subprocess.run([base, "-m", "venv", "--clear", str(PEER_VENV)], check=True)
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", PEER_PACKAGE, "msgspec",
                          "mypy-extensions", "mypy>=2.4", "setuptools"],
                         capture_output=True, text=True)
    if pip.returncode != 0:
        print(f"peer: installing {PEER_PACKAGE} failed, skipped:\n{pip.stderr[-800:]}")
        return None
    stamp.touch()
    return str(py)


def build_stream(ops: int, path: Path) -> dict[str, int]:
    """The churn stream for both engines, written to ``path``."""
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "bench"))
    from bastion.core import commands as C
    from bastion.core import events as E
    from bastion.core.codec import encode_command
    from bastion.core.engine import Engine
    from bastion.demo import BTC_USDT, demo_setup, stamp
    from core import ACCOUNTS, gen_churn  # type: ignore[import-not-found]

    stream = gen_churn(ops)
    engine = Engine()
    for cmd in stamp(demo_setup(list(range(1, ACCOUNTS + 1)))):
        engine.apply(cmd)
    lot = engine.markets[BTC_USDT].lot_size
    peer: list[list[object]] = []
    spare = 10**12  # ids for placements Bastion refused (the peer may still accept them)
    for cmd in stream:
        events = engine.apply(cmd)
        if isinstance(cmd, C.PlaceOrder):
            acc = [e for e in events if isinstance(e, E.OrderAccepted)]
            oid = acc[0].order_id if acc else (spare := spare + 1)
            peer.append(["new", oid, cmd.account, cmd.side, cmd.price, cmd.qty // lot])
        elif isinstance(cmd, C.CancelOrder):
            peer.append(["cancel", cmd.order_id, cmd.account])
    path.write_text(json.dumps({"accounts": ACCOUNTS, "peer": peer,
                                "bastion": [encode_command(c).hex() for c in stream]}))
    return {"ops": len(stream), "trades": engine.next_trade_id - 1,
            "resting": len(engine.orders)}


def _run(python: str, kind: str, path: Path, src: Path = ROOT / "src",
         pure: bool = False) -> int:
    env = {**os.environ, "BASTION_PURE": "1"} if pure else None
    cpu = ["--cpu-time"] if CLOCK is time.process_time else []
    out = subprocess.run([python, str(Path(__file__).resolve()), "--worker", kind,
                          "--stream", str(path), "--src", str(src), *cpu],
                         capture_output=True, text=True, check=True, env=env)
    return round(float(out.stdout.strip().splitlines()[-1]))


def _build(python: str) -> str:
    """Which core build (``bastion.corebuild``) a Bastion run in ``python`` loads."""
    out = subprocess.run([python, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                          "from bastion import corebuild; print(corebuild.describe())",
                          str(ROOT / "src")], capture_output=True, text=True)
    return out.stdout.strip() or out.stderr.strip()[-200:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--ops", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5, help="runs per engine (best of N)")
    ap.add_argument("--json", action="store_true", help="one JSON object on the last line")
    ap.add_argument("--baseline-src", type=Path,
                    help="another Bastion source tree (its src/) to time alongside, e.g. an "
                         "older commit's `git archive` (Python 3.12 runs)")
    ap.add_argument("--pure-312", action="store_true",
                    help="do not compile Bastion's core for the 3.12 venv (it then runs pure)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time each loop in the worker's process CPU time, not wall clock")
    ap.add_argument("--worker", choices=["bastion", "peer"], help=argparse.SUPPRESS)
    ap.add_argument("--src", type=Path, default=ROOT / "src", help=argparse.SUPPRESS)
    ap.add_argument("--stream", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time
    if args.worker:
        print(_bastion_worker(args.stream, args.src) if args.worker == "bastion"
              else _peer_worker(args.stream))
        return
    py312 = peer_python()
    if py312 and not args.pure_312 and not _build(py312).startswith("core: compiled"):
        # Bastion's compiled core for this interpreter too, so both engines run on 3.12
        subprocess.run([py312, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                        "from bastion.corebuild import build; build()", str(ROOT / "src")],
                       check=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stream.json"
        info = build_stream(args.ops, path)
        here = f"{sys.version_info.major}.{sys.version_info.minor}"
        runs: dict[str, list[int]] = {f"bastion_py{here}": [], f"bastion_py{here}_pure": []}
        if py312:
            runs["bastion_py312"] = []
            runs["peer_py312"] = []
            if args.baseline_src:
                runs["baseline_py312"] = []
        for _ in range(args.repeat):
            runs[f"bastion_py{here}"].append(_run(sys.executable, "bastion", path))
            runs[f"bastion_py{here}_pure"].append(_run(sys.executable, "bastion", path,
                                                        pure=True))
            if py312:
                runs["bastion_py312"].append(_run(py312, "bastion", path))
                runs["peer_py312"].append(_run(py312, "peer", path))
                if args.baseline_src:
                    runs["baseline_py312"].append(_run(py312, "bastion", path,
                                                       args.baseline_src.resolve()))
    best = {k: max(v) for k, v in runs.items()}
    result: dict[str, object] = {"workload": "churn", **info, "runs_ops_per_s": runs,
                                 "best_ops_per_s": best, "cpus": os.cpu_count(),
                                 "clock": "process CPU" if args.cpu_time else "wall",
                                 f"build_py{here}": _build(sys.executable)}
    result["ratio_compiled_to_pure"] = round(best[f"bastion_py{here}"]
                                             / best[f"bastion_py{here}_pure"], 3)
    if py312:
        result["build_py312"] = _build(py312)
        result["ratio_bastion_to_peer_py312"] = round(best["bastion_py312"]
                                                      / best["peer_py312"], 3)
        # the runs alternate, so each round's pair saw about the same machine
        paired = sorted(b / p for b, p in zip(runs["bastion_py312"], runs["peer_py312"],
                                              strict=True))
        result["median_round_ratio_py312"] = round(paired[len(paired) // 2], 3)
        result[f"ratio_bastion_py{here}_to_peer_py312"] = round(best[f"bastion_py{here}"]
                                                                / best["peer_py312"], 3)
        if args.baseline_src:
            result["ratio_baseline_to_peer_py312"] = round(best["baseline_py312"]
                                                           / best["peer_py312"], 3)
    if not args.json:
        print(f"Python {here}: {result[f'build_py{here}']}; timed by {result['clock']}")
        if py312:
            print(f"Python 3.12: {result['build_py312']}")
        for k, v in runs.items():
            print(f"{k:>21}: best {best[k]:>9,} ops/s  runs {v}")
        print(f"ratio Bastion compiled / pure (Python {here}): "
              f"{result['ratio_compiled_to_pure']}")
        if py312:
            print(f"ratio Bastion (Python {here}, as built) / matching-engine (Python 3.12): "
                  f"{result[f'ratio_bastion_py{here}_to_peer_py312']}")
            print(f"ratio Bastion / matching-engine (both Python 3.12): "
                  f"{result['ratio_bastion_to_peer_py312']} (bests), "
                  f"{result['median_round_ratio_py312']} (median of the rounds' ratios)")
            if args.baseline_src:
                print(f"ratio baseline / matching-engine: "
                      f"{result['ratio_baseline_to_peer_py312']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
