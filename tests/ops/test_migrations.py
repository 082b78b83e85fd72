"""Migrations: the file format's errors, the journaled command and its rollback, and dry-runs
against a real journal (CLI in a subprocess)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from bastion.core import commands as C
from bastion.core import events as E
from bastion.core import migrations
from bastion.core.engine import Engine
from bastion.demo import BTC_USDT, ETH_USDT, demo_setup, stamp
from bastion.journal.local import LocalJournal
from bastion.node import Node, NodeConfig
from bastion.node.recovery import rebuild
from bastion.node.workload import SpotWorkload, spot_setup
from bastion.ops.migrations.spec import MigrationError, parse_migration, to_command
from bastion.snapshots.store import SnapshotStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "migrations"
CFG = NodeConfig(snapshot_every_commands=0, snapshot_every_seconds=0, progress=False)
T0 = 1_795_824_000_000  # 2026-11-28T00:00:00Z
NEW_SOL = (b'[[changes]]\nkind = "new_asset"\nasset = "SOL"\ndecimals = 8\n'
           b'[[changes]]\nkind = "new_market"\nmarket = "SOL-USDT"\nbase = "SOL"\n'
           b'quote = "USDT"\nprice_decimals = 3\ntick_size = 10\nlot_size = 1_000_000\n'
           b'min_qty = 1_000_000\nmax_qty = 10_000_000_000\n')
HEAD = 'format = 1\nid = "m1"\ndescription = "d"\nauthor = "a"\n'


def bastion(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bastion.cli.main", *args],
                          capture_output=True, text=True, timeout=300,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})


def mig(body: str, head: str = HEAD) -> bytes:
    return (head + body).encode()


# ------------------------------------------------------------------ the file format


@pytest.mark.parametrize(("text", "field", "words"), [
    (b"id = \n", "", "not valid TOML"),
    (b"\xff\xfe", "", "not UTF-8"),
    (mig('[[changes]]\nkind = "tick"\nmarket = "BTC-USDT"\ntick_size = "100"\n'
         'on_conflict = "cancel"\n'), "changes[0].tick_size", "Expected `int`, got `str`"),
    (mig('[[changes]]\nkind = "tick"\nmarket = "BTC-USDT"\ntick_size = 100\n'
         'on_conflict = "cancel"\ncolour = 1\n'), "changes[0].colour", "unknown field"),
    (mig('[[changes]]\nkind = "tick"\nmarket = "BTC-USDT"\ntick_size = 100\n'),
     "changes[0].on_conflict", "required field is missing"),
    (mig('[[changes]]\nkind = "tick"\nmarket = "BTC-USDT"\ntick_size = 100\n'
         'on_conflict = "ignore"\n'), "changes[0].on_conflict", "Invalid enum value 'ignore'"),
    (mig('[[changes]]\nkind = "rename"\n'), "changes[0].kind", "Invalid value 'rename'"),
    (mig('[[changes]]\nkind = "fees"\nmarket = "BTC-USDT"\nmaker_fee_ppm = 0\n'
         'taker_fee_ppm = 0\nend = 2026-12-01T00:00:00\n'), "changes[0].end", "time zone"),
    (mig('[[changes]]\nkind = "mode"\nmarket = "ETH-USDT"\nmode = "post_only"\nreason = "r"\n'
         'start = 2026-12-01T08:00:00Z\nend = 2026-12-01T09:00:00Z\n'
         '[[changes]]\nkind = "mode"\nmarket = "ETH-USDT"\nmode = "cancel_only"\nreason = "r"\n'
         'start = 2026-12-01T08:30:00Z\nend = 2026-12-01T10:00:00Z\n'),
     "changes[1].start", "overlaps the window of changes[0]"),
    (mig('[[changes]]\nkind = "fees"\nmarket = "BTC-USDT"\nmaker_fee_ppm = 0\ntaker_fee_ppm = 0\n'
         '[[changes]]\nkind = "fees"\nmarket = "BTC-USDT"\nmaker_fee_ppm = 1\n'
         'taker_fee_ppm = 1\n'), "changes[1]", "same thing as changes[0]"),
    (mig("changes = []\n"), "changes", "give 1..256 changes"),
    (mig('[[changes]]\nkind = "new_asset"\nasset = "SOL"\ndecimals = 8\n',
         head='format = 2\nid = "m1"\ndescription = "d"\nauthor = "a"\n'), "format",
     "unsupported format 2"),
    (mig('[[changes]]\nkind = "new_asset"\nasset = "SOL"\ndecimals = 8\n',
         head='format = 1\nid = "../etc"\ndescription = "d"\nauthor = "a"\n'), "id", "letters"),
    (b'format = 1\nid = "x"\nauthor = "a"\n[[changes]]\nkind = "new_asset"\nasset = "S"\n'
     b'decimals = 8\n', "description", "required field is missing"),
])
def test_bad_files_name_the_field(text: bytes, field: str, words: str) -> None:
    with pytest.raises(MigrationError) as info:
        parse_migration(text)
    assert info.value.field == field
    assert words in info.value.message


def test_cli_check_reports_field_and_examples_parse(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_bytes(mig('[[changes]]\nkind = "tick"\nmarket = "BTC-USDT"\ntick_size = 1.5\n'
                        'on_conflict = "cancel"\n'))
    run = bastion("migrate", "check", str(bad))
    assert run.returncode == 2
    assert "MIGRATION_INVALID at changes[0].tick_size: Expected `int`, got `float`" in run.stderr
    assert "Traceback" not in run.stderr
    for example in EXAMPLES.glob("*.toml"):
        ok = bastion("migrate", "check", str(example))
        assert ok.returncode == 0, ok.stderr


# ------------------------------------------------------------------ the effect on an engine


def _engine_with_book() -> Engine:
    eng = Engine()
    for cmd in stamp(demo_setup([1, 2]), start_ts=T0):
        eng.apply(cmd)
    work = SpotWorkload(3, accounts=2)
    for cmd in stamp(work.batch(200), start_seq=eng.seq + 1, start_ts=T0 + 1000):
        eng.apply(cmd)
    assert eng.orders, "workload left no resting orders"
    return eng


def _metadata(eng: Engine) -> bytes:
    state = eng.export_state()
    return msgspec.msgpack.encode([state.assets, state.markets])


def _tick(policy: str, tick: int = 100) -> bytes:
    return mig(f'[[changes]]\nkind = "tick"\nmarket = "BTC-USDT"\ntick_size = {tick}\n'
               f'on_conflict = "{policy}"\n')


def _apply(eng: Engine, cmd: C.Command, dt: int = 0) -> list[E.Event]:
    """The next command, as the sequencer would stamp it."""
    cmd.seq, cmd.ts = eng.seq + 1, eng.ts + dt
    return eng.apply(cmd)


def _migrate(eng: Engine, text: bytes) -> list[E.Event]:
    return _apply(eng, to_command(parse_migration(text)))


def _refusal(events: list[E.Event]) -> E.Rejected:
    assert len(events) == 1 and isinstance(events[0], E.Rejected), events
    return events[0]


def _unsequenced(eng: Engine) -> bytes:
    return msgspec.msgpack.encode(msgspec.structs.replace(eng.export_state(), seq=0, ts=0))


def test_refuse_migration_changes_nothing_and_names_the_orders() -> None:
    eng = _engine_with_book()
    before = _unsequenced(eng)
    off = sorted(o.order_id for o in migrations.resting(eng, BTC_USDT) if o.price % 100)
    assert off, "no off-grid orders to conflict with"
    refused = _refusal(_migrate(eng, _tick("refuse-migration")))
    assert refused.code == migrations.MIGRATION_CONFLICT and refused.command == "ApplyMigration"
    assert refused.message.startswith(f"changes[0].on_conflict: {len(off)} resting order(s)")
    assert str(off[0]) in refused.message
    assert _unsequenced(eng) == before


def test_semantic_errors_name_the_field() -> None:
    eng = _engine_with_book()
    cases = [
        ('[[changes]]\nkind = "tick"\nmarket = "DOGE-USDT"\ntick_size = 1\n'
         'on_conflict = "cancel"\n', "changes[0].market: unknown market 'DOGE-USDT'"),
        ('[[changes]]\nkind = "lot"\nmarket = "BTC-USDT"\nlot_size = 10\nmin_qty = 10\n'
         'on_conflict = "cancel"\n', "changes[0].lot_size: tick_size x lot_size must be a "
                                     "multiple of 10^2"),
        ('[[changes]]\nkind = "new_market"\nmarket = "X-USDT"\nbase = "X"\nquote = "USDT"\n'
         'price_decimals = 2\ntick_size = 1\nlot_size = 1\nmin_qty = 1\nmax_qty = 10\n',
         "changes[0].base: unknown asset 'X'"),
        ('[[changes]]\nkind = "fees"\nmarket = "BTC-USDT"\nmaker_fee_ppm = 900\n'
         'taker_fee_ppm = 500\n', "changes[0].taker_fee_ppm: maker_fee_ppm must be within"),
    ]
    for body, message in cases:
        refused = _refusal(_migrate(eng, mig(body)))
        assert refused.message.startswith(message), refused.message
    holiday = mig(f'[[changes]]\nkind = "fees"\nmarket = "BTC-USDT"\nmaker_fee_ppm = 0\n'
                  f'taker_fee_ppm = 0\nend = {T0 + 3_600_000}\n')
    applied = _migrate(eng, holiday)
    assert isinstance(applied[-1], E.MigrationApplied) and applied[-1].scheduled == 1
    again = _refusal(_migrate(eng, holiday))
    assert again.code == migrations.MIGRATION_APPLIED
    assert again.message.startswith("id: migration m1 was already applied")
    other = holiday.replace(b'id = "m1"', b'id = "m2"')
    overlap = _refusal(_migrate(eng, other))
    assert "changes[0].start: overlaps the pending fee schedule of migration m1" in \
        overlap.message


def test_apply_cancel_schedule_and_rollback_restore_metadata_byte_for_byte() -> None:
    eng = _engine_with_book()
    before = _metadata(eng)
    off = {o.order_id for o in migrations.resting(eng, BTC_USDT) if o.price % 100}
    text = _tick("cancel") + (
        f'[[changes]]\nkind = "fees"\nmarket = "BTC-USDT"\nmaker_fee_ppm = 0\n'
        f'taker_fee_ppm = 0\nend = {eng.ts + 60_000}\n'
        f'[[changes]]\nkind = "mode"\nmarket = "ETH-USDT"\nmode = "post_only"\nreason = "warm"\n'
        f'start = {eng.ts + 10_000}\nend = {eng.ts + 20_000}\n').encode()
    out = _migrate(eng, text + NEW_SOL)
    assert isinstance(out[-1], E.MigrationApplied), out[-1]
    cancelled = {e.order_id for e in out if isinstance(e, E.OrderCanceled)}
    assert cancelled == off and out[-1].cancelled == len(off)
    assert all(e.reason == migrations.CANCEL_REASON for e in out
               if isinstance(e, E.OrderCanceled))
    assert eng.markets[BTC_USDT].tick_size == 100 and eng.markets[BTC_USDT].taker_fee_ppm == 0
    assert "SOL-USDT" in eng.markets and "SOL" in eng.assets
    assert not eng.check_invariants()
    restored = Engine.from_state(eng.export_state())
    assert restored.state_hash() == eng.state_hash()
    for dt, mode in ((10_000, "post_only"), (10_000, "open")):
        for e in (eng, restored):  # timed steps run at the same point after a restore
            _apply(e, C.Deposit(account=1, asset="USDT", amount=1), dt)
            assert e.markets[ETH_USDT].mode == mode
    _apply(eng, C.Deposit(account=1, asset="USDT", amount=1), 40_000)
    assert eng.markets[BTC_USDT].taker_fee_ppm == 500, "fee holiday did not end"
    assert not eng.migrations.pending
    back = _apply(eng, C.RollbackMigration(migration_id="m1", reason="test"))
    assert isinstance(back[-1], E.MigrationRolledBack), back
    assert _metadata(eng) == before
    assert not eng.check_invariants()
    assert _refusal(_apply(eng, C.RollbackMigration(migration_id="m1", reason="again"))).code \
        == migrations.UNKNOWN_MIGRATION


# ------------------------------------------------------------------ dry-runs on a journal


@pytest.fixture(scope="module")
def shard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Set-up at T0, then five minutes of traffic 30 minutes later: the default 10-minute
    window holds traffic only, on a state with resting orders."""
    data = tmp_path_factory.mktemp("migrate") / "shard"
    now = [T0]

    async def build() -> None:
        async with Node(data, config=CFG, clock=lambda: now[0]) as node:
            await node.submit_many(spot_setup(6))
            work = SpotWorkload(21, accounts=6)
            now[0] = T0 + 20 * 60_000
            await node.submit_many(work.batch(300))
            await node.snapshot("before-window")
            now[0] = T0 + 30 * 60_000
            for _ in range(30):
                now[0] += 10_000
                await node.submit_many(work.batch(20))

    asyncio.run(build())
    return data


def _live(data: Path) -> tuple[int, str]:
    with LocalJournal(data / "journal", readonly=True) as journal:
        engine, _ = rebuild(journal, SnapshotStore(data / "snapshots"), progress=False)
    return engine.seq, engine.state_hash()


def test_faulty_tick_migration_is_caught_and_nothing_applied(shard: Path) -> None:
    before = _live(shard)
    run = bastion("migrate", "dry-run", str(EXAMPLES / "2026-12-btc-tick-coarsen.toml"),
                  "--data", str(shard), "--json")
    assert run.returncode == 1, run.stdout + run.stderr
    rep = json.loads(run.stdout)
    assert not rep["ok"]
    assert rep["refused_now"]["code"] == "MIGRATION_CONFLICT"
    assert rep["refused_now"]["message"].startswith("changes[0].on_conflict:")
    assert rep["window"]["commands"] == 600
    assert _live(shard) == before
    human = bastion("migrate", "dry-run", str(EXAMPLES / "2026-12-btc-tick-coarsen.toml"),
                    "--data", str(shard))
    assert human.returncode == 1 and "FAIL: do not apply" in human.stdout


def test_cancel_policy_reports_cancellations_and_bulk_refusals(shard: Path,
                                                               tmp_path: Path) -> None:
    text = (EXAMPLES / "2026-12-btc-tick-coarsen.toml").read_text()
    f = tmp_path / "cancel.toml"
    f.write_text(text.replace('"refuse-migration"', '"cancel"'))
    rep = json.loads(bastion("migrate", "dry-run", str(f), "--data", str(shard),
                             "--json").stdout)
    seq, _ = _live(shard)
    with LocalJournal(shard / "journal", readonly=True) as journal:
        engine, _ = rebuild(journal, SnapshotStore(shard / "snapshots"), progress=False)
    off = [o for o in migrations.resting(engine, BTC_USDT) if o.price % 100]
    assert rep["refused_now"] is None and rep["cancelled_now"]["count"] == len(off) > 0
    places = [c for c in rep["outcome_changes"]
              if c["command"] == "PlaceOrder" and c["after"] == "TICK_SIZE"]
    assert places and places[0]["before"] == "ok" and places[0]["examples"]
    assert places[0]["examples"][0]["command"]["price"] % 100
    assert [b["command"] for b in rep["bulk_refusals"]] == ["PlaceOrder"]
    cancels = {c["after"]: c for c in rep["outcome_changes"] if c["command"] == "CancelOrder"}
    assert cancels["UNKNOWN_ORDER (order cancelled by the migration)"]["declared"]
    assert not cancels["UNKNOWN_ORDER (its placement was refused)"]["declared"]
    assert not rep["ok"]


def test_fee_holiday_dry_run_passes_with_fee_estimate(shard: Path) -> None:
    run = bastion("migrate", "dry-run", str(EXAMPLES / "2026-12-fee-holiday-and-sol.toml"),
                  "--data", str(shard), "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    rep = json.loads(run.stdout)
    assert rep["ok"] and rep["cancelled_now"]["count"] == 0
    fees = rep["fees"][BTC_USDT]
    assert fees["trades"] > 0 and fees["baseline"] > 0 and fees["migrated"] == 0
    assert fees["delta"] == -fees["baseline"] and fees["asset"] == "USDT"
    assert not [c for c in rep["outcome_changes"] if c["before"] == "ok"]


def test_delist_and_limits_follow_their_on_conflict() -> None:
    eng = _engine_with_book()
    resting_btc = {o.order_id for o in migrations.resting(eng, BTC_USDT)}
    delist = mig('[[changes]]\nkind = "delist"\nmarket = "BTC-USDT"\nreason = "sunset"\n'
                 'on_conflict = "refuse-migration"\n')
    refused = _refusal(_migrate(eng, delist))
    assert refused.message.startswith(f"changes[0].on_conflict: {len(resting_btc)} resting")
    out = _migrate(eng, delist.replace(b'"refuse-migration"', b'"cancel"'))
    assert isinstance(out[-1], E.MigrationApplied)
    assert {e.order_id for e in out if isinstance(e, E.OrderCanceled)} == resting_btc
    assert eng.markets[BTC_USDT].mode == "closed" and not migrations.resting(eng, BTC_USDT)
    late = _apply(eng, C.PlaceOrder(account=1, market=BTC_USDT, side="buy", price=5_000_000,
                                    qty=1_000))
    assert _refusal(late).code == "MARKET_MODE"
    again = _refusal(_migrate(eng, mig('[[changes]]\nkind = "tick"\nmarket = "BTC-USDT"\n'
                                       'tick_size = 10\non_conflict = "cancel"\n',
                                       head=HEAD.replace("m1", "m9"))))
    assert again.message == "changes[0].market: BTC-USDT is closed (delisted)"
    _apply(eng, C.RollbackMigration(migration_id="m1", reason="relist"))
    assert eng.markets[BTC_USDT].mode == "open"

    for qty in (20_000_000, 10_000):
        _apply(eng, C.PlaceOrder(account=1, market=ETH_USDT, side="sell", price=300_000, qty=qty))
    big = {o.order_id for o in migrations.resting(eng, ETH_USDT) if o.qty > 10_000_000}
    assert len(big) == 1 and len(migrations.resting(eng, ETH_USDT)) == 2
    limits = mig('[[changes]]\nkind = "limits"\nmarket = "ETH-USDT"\nmax_qty = 10_000_000\n'
                 'market_band_bps = 300\non_conflict = "cancel"\n', head=HEAD.replace("m1", "m2"))
    out = _migrate(eng, limits)
    assert {e.order_id for e in out if isinstance(e, E.OrderCanceled)} == big
    mkt = eng.markets[ETH_USDT]
    assert (mkt.max_qty, mkt.market_band_bps) == (10_000_000, 300)
    assert not eng.check_invariants()
