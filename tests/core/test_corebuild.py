"""The compiled core (``bastion.corebuild``): it loads only when current, says which build
runs, and gives exactly the events and state of the pure-Python core."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bastion import corebuild

SRC = Path(corebuild.__file__).resolve().parent.parent

#: a seeded random spot and perpetual stream (limits, market orders, IOC/FOK, amends,
#: cancels, index updates and funding), printed as a digest of every event and the state hash
STREAM = r"""
import json, random, sys
from hashlib import blake2b
import msgspec
sys.path.insert(0, sys.argv[1])
from bastion import corebuild
from bastion.core import commands as C
from perp_harness import PerpHarness, PERP, PX, LOT
rng = random.Random(5)
h = PerpHarness(accounts=list(range(1, 9)))
digest = blake2b(digest_size=16)
ids = []
for i in range(2500):
    r = rng.random()
    acct = rng.randrange(1, 9)
    side = rng.choice(["buy", "sell"])
    if r < 0.04:
        ev = h.index(PX + rng.randrange(-300, 300) * 10)
    elif r < 0.05:
        ev = h.do(C.FundingTick(market=PERP), 1)
    elif r < 0.25 and ids:
        ev = h.do(C.CancelOrder(account=acct, market=rng.choice(["BTC-USDT", PERP]),
                                order_id=rng.choice(ids)))
    elif r < 0.30 and ids:
        ev = h.do(C.AmendOrder(account=acct, market=rng.choice(["BTC-USDT", PERP]),
                               order_id=rng.choice(ids), new_qty=rng.randrange(1, 9) * LOT))
    else:
        spot = rng.random() < 0.5
        market = "BTC-USDT" if spot else PERP
        lot, mid = (1_000, 5_000_000) if spot else (LOT, PX)
        kind = rng.choice(["limit"] * 6 + ["market"])
        ev = h.do(C.PlaceOrder(account=acct, market=market, side=side, order_type=kind,
                               price=0 if kind == "market" else mid + rng.randrange(-40, 40) * 10,
                               qty=rng.randrange(1, 12) * lot,
                               tif=rng.choice(["GTC"] * 5 + ["IOC", "FOK"]),
                               stp=rng.choice([None, "expire_maker", "expire_both", "none"])))
    for e in ev:
        digest.update(msgspec.msgpack.encode(e))
        oid = getattr(e, "order_id", 0)
        if type(e).__name__ == "OrderAccepted":
            ids.append(oid)
print(json.dumps({"kind": corebuild.KIND, "events": digest.hexdigest(),
                  "state": h.engine.state_hash(), "problems": h.engine.check_invariants(),
                  "trades": h.engine.next_trade_id - 1}))
"""


def _run(code: str, *args: str, pure: bool, src: Path = SRC) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{SRC.parent / 'tests'}"}
    env.pop(corebuild.PURE_ENV, None)
    if pure:
        env[corebuild.PURE_ENV] = "1"
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _current_build() -> bool:
    try:
        meta = json.loads((corebuild.out_dir() / "manifest.json").read_text())
    except OSError:
        return False
    return bool(meta.get("digest") == corebuild.sources_digest())


def test_the_reported_build_is_the_one_loaded() -> None:
    """``KIND`` never claims a build that is not running: every hot module is an extension
    when compiled and a Python source when pure."""
    import importlib

    files = [importlib.import_module("bastion.core." + m.replace("/", ".")).__file__ or ""
             for m in corebuild.HOT]
    if corebuild.KIND == "compiled":
        assert all(f.endswith(".so") for f in files), files
    else:
        assert all(f.endswith(".py") for f in files), files
    assert corebuild.describe().startswith(f"core: {corebuild.KIND} (")
    if os.environ.get(corebuild.PURE_ENV):
        assert corebuild.KIND == "pure" and f"{corebuild.PURE_ENV}=1" == corebuild.REASON
    elif _current_build():
        assert corebuild.KIND == "compiled", corebuild.REASON
    elif not corebuild.cannot_build():  # CI runs the compiled build wherever it can be built
        pytest.fail(f"this machine can compile the core but runs it pure "
                    f"({corebuild.REASON}): run make, or see make's corebuild line")


def test_compiled_and_pure_give_the_same_events_and_state() -> None:
    if not _current_build():
        pytest.skip("no current compiled build for this interpreter (make builds it)")
    compiled = _run(STREAM, str(SRC), pure=False)
    pure = _run(STREAM, str(SRC), pure=True)
    assert (compiled["kind"], pure["kind"]) == ("compiled", "pure")
    assert compiled["problems"] == pure["problems"] == []
    assert isinstance(pure["trades"], int) and pure["trades"] > 100  # the stream really trades
    assert compiled["events"] == pure["events"] and compiled["state"] == pure["state"]


def test_edited_sources_never_run_a_stale_build(tmp_path: Path) -> None:
    """A copy of the sources with one core file changed (as a developer's edit or a shadow
    candidate) runs pure; an unchanged copy may use the build."""
    if not _current_build():
        pytest.skip("no current compiled build for this interpreter (make builds it)")
    probe = "from bastion import corebuild; import json; print(json.dumps({'kind': corebuild.KIND, 'why': corebuild.REASON}))"
    same = tmp_path / "same"
    shutil.copytree(SRC / "bastion", same / "bastion",
                    ignore=shutil.ignore_patterns("__pycache__"))
    assert _run(probe, pure=False, src=same)["kind"] == "compiled"
    rules = same / "bastion" / "core" / "rules.py"
    rules.write_text(rules.read_text() + "\n# edited\n")
    edited = _run(probe, pure=False, src=same)
    assert edited["kind"] == "pure" and "changed" in str(edited["why"])
