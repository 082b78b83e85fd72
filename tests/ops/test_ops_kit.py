"""The operator kit through a running node: selective mass cancel (Paradex: everything but
TP/SL), multi-market halts, and an online named snapshot taken under load that verifies and
restores to the same state hash as a replay of the journal to its seq."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from bastion.core import commands as C
from bastion.core import events as E
from bastion.core.codec import decode_command
from bastion.core.engine import Engine
from bastion.drills import paradex_book as P
from bastion.journal import LocalJournal
from bastion.node import Node, NodeConfig
from bastion.node.recovery import snapshot_checker
from bastion.node.workload import SpotWorkload, spot_setup
from bastion.ops import kit
from bastion.ops.cancel import CancelFilter, select
from bastion.snapshots import SnapshotStore

QUIET = NodeConfig(snapshot_every_commands=0, snapshot_every_seconds=0, progress=False)
PAIRS = 8


def resting(engine: Engine) -> list[tuple[str, int, str, int]]:
    out = [("post_only" if o.post_only else "limit", o.account, o.side, o.order_id)
           for o in engine.orders.values() if o.live]
    out += [("tp_sl", t.account, t.side, t.trigger_id)
            for t in engine.perp.triggers.by_id.values()]
    return sorted(out)


def test_cancel_everything_but_tp_sl_leaves_exactly_the_triggers(tmp_path: Path) -> None:
    async def main() -> None:
        now = [int(time.time() * 1000) - 13 * P.HOUR]
        async with Node(tmp_path / "data", config=QUIET, clock=lambda: now[0]) as node:
            for dt, cmd in P.history(PAIRS, start_ms=now[0]):
                now[0] += dt
                for ev in await node.submit(cmd):
                    assert not isinstance(ev, E.Rejected), (cmd, ev)
            now[0] += 1_000
            await node.submit(C.UpdateIndex(market=P.MARKET, sources=P.sources(P.PX, now[0])))
            rng = random.Random(5)
            for i in range(40):
                account = rng.choice(P.MAKERS)
                side = rng.choice(["buy", "sell"])
                off = P.PX * rng.randint(1, 30) // 1000 // 10 * 10
                events = await node.submit(C.PlaceOrder(
                    account=account, market=P.MARKET, side=side, qty=100_000,  # type: ignore[arg-type]
                    price=P.PX - off if side == "buy" else P.PX + off, post_only=bool(i % 2)))
                assert isinstance(events[0], E.OrderAccepted), events
            before = resting(node.engine)
            triggers = [r for r in before if r[0] == "tp_sl"]
            assert len(triggers) == 2 * PAIRS and len(before) > len(triggers) + 20

            # a dry run counts and changes nothing
            h = node.engine.state_hash()
            flt = CancelFilter(except_kinds=frozenset({"tp_sl"}))
            dry = await kit.cancel(node, flt, dry_run=True)
            assert dry.selected == len(before) - len(triggers) and dry.canceled == 0
            assert node.engine.state_hash() == h

            # filters select exactly what they say, by kind, side and account
            sells = await kit.cancel(node, CancelFilter(side="sell", kinds=frozenset(
                {"post_only"})), dry_run=True)
            assert sells.selected == sum(1 for r in before if r[0] == "post_only"
                                         and r[2] == "sell")
            for who in (1, P.LONGS_FROM):
                acct = CancelFilter(accounts=frozenset({who}))
                assert select(node.engine, acct).count == sum(1 for r in before if r[1] == who)

            done = await kit.cancel(node, flt, dry_run=False)
            assert done.canceled == dry.selected
            assert resting(node.engine) == triggers
            assert node.engine.check_invariants() == []
        # journaled: a replay of the journal ends in the same state
        engine = Engine()
        with LocalJournal(tmp_path / "data" / "journal", readonly=True) as journal:
            for _seq, payload in journal.read(1):
                engine.apply(decode_command(payload))
        assert resting(engine) == triggers

    asyncio.run(main())


def test_cancel_refuses_bad_filters_with_the_cores_words() -> None:
    eng = Engine()
    for flt in (CancelFilter(kinds=frozenset({"stop"})), CancelFilter(side="up"),
                CancelFilter(markets=frozenset({"NOPE"})),
                CancelFilter(except_kinds=frozenset({"iceberg"}))):
        with pytest.raises(ValueError):
            select(eng, flt)
    # the command itself refuses the same way, changing nothing
    from bastion.demo import demo_setup, stamp
    for cmd in stamp(demo_setup()):
        eng.apply(cmd)
    bad = C.CancelOrders(kinds=["stop"], reason="x", seq=eng.seq + 1, ts=eng.ts + 1)
    events = eng.apply(bad)
    assert len(events) == 1 and isinstance(events[0], E.Rejected)
    nothing = C.CancelOrders(reason=" ", seq=eng.seq + 1, ts=eng.ts + 1)
    assert isinstance(eng.apply(nothing)[0], E.Rejected)


def test_the_filter_is_applied_when_the_command_applies() -> None:
    """An order placed after the preview but before the cancel applies is cancelled too, and
    the journaled command carries the operator's reason to every cancel event."""
    from bastion.demo import demo_setup, stamp

    eng = Engine()
    for cmd in stamp(demo_setup()):
        eng.apply(cmd)

    def do(cmd: C.Command) -> list[E.Event]:
        cmd.seq, cmd.ts = eng.seq + 1, eng.ts + 1
        return eng.apply(cmd)

    do(C.PlaceOrder(account=1, market="BTC-USDT", side="buy", qty=10_000, price=4_000_000))
    flt = CancelFilter(markets=frozenset({"BTC-USDT"}), side="buy")
    assert select(eng, flt).count == 1
    do(C.PlaceOrder(account=2, market="BTC-USDT", side="buy", qty=10_000, price=4_100_000))
    do(C.PlaceOrder(account=2, market="BTC-USDT", side="sell", qty=10_000, price=6_000_000))
    events = do(flt.command("incident 12: bad bids"))
    canceled = [e for e in events if isinstance(e, E.OrderCanceled)]
    assert len(canceled) == 2 and {e.reason for e in canceled} == {"incident 12: bad bids"}
    assert [o.side for o in eng.orders.values()] == ["sell"]
    assert eng.check_invariants() == []


def test_halt_and_resume_a_set_of_markets(tmp_path: Path) -> None:
    async def main() -> None:
        async with Node(tmp_path / "data", config=QUIET) as node:
            await node.submit_many(spot_setup(4))
            names = sorted(node.engine.markets)
            out = await kit.set_modes(node, names[:1], "halted", "incident 7")
            assert out == {names[0]: "halted"}
            assert [node.engine.markets[m].mode for m in names] == ["halted", *["open"] *
                                                                   (len(names) - 1)]
            assert node.engine.markets[names[0]].mode_reason == "incident 7"
            await kit.set_modes(node, None, "open", "resolved")
            assert {node.engine.markets[m].mode for m in names} == {"open"}
            with pytest.raises(Exception, match="UNKNOWN_MARKET|unknown market"):
                await kit.set_modes(node, ["NOPE"], "halted", "x")

    asyncio.run(main())


def test_online_snapshot_under_load_verifies_and_restores_to_the_same_hash(
        tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def main() -> tuple[dict[str, object], int, int]:
        async with Node(data, config=QUIET) as node:
            await node.submit_many(spot_setup(10))
            work = SpotWorkload(3, accounts=10, tag="u-")
            stop = asyncio.Event()
            acked = [0]

            async def load() -> None:
                while not stop.is_set():
                    results = await node.submit_many(work.batch(200))
                    acked[0] += len(results)

            task = asyncio.create_task(load())
            await asyncio.sleep(0.5)
            during = acked[0]
            snap = await kit.online_snapshot(node, "under-load")
            await asyncio.sleep(0.3)
            stop.set()
            await task
            return snap, during, acked[0]

    snap, before, after = asyncio.run(main())
    assert after > before > 0                        # trading went on around it
    assert isinstance(snap.pause_ms, float) and snap.pause_ms > 0   # reported
    store = SnapshotStore(data / "snapshots")
    info = store.find("under-load")
    header, payload = store.read(info)
    loaded: dict[str, Engine] = {}
    with LocalJournal(data / "journal", readonly=True) as journal:
        assert snapshot_checker(journal, loaded)(info, header, payload) is None   # verifies
        replayed = Engine()
        for _seq, blob in journal.read(1, header.seq):
            replayed.apply(decode_command(blob))
    restored = loaded[info.id]
    assert restored.seq == header.seq == snap.seq
    assert restored.state_hash() == replayed.state_hash() == header.state_hash
    assert restored.check_invariants() == []
