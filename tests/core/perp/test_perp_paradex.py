"""The Paradex 19 Jan 2026 incident as a test.

A market holds many leveraged positions and a large cumulative funding index. Corrupted data
then (a) resets the funding index to zero, or (b) prices the index absurdly. With the guards on,
the market halts, nothing is liquidated and the ledger is intact. With the guards off (the
``guards=False`` drill flag), the same input liquidates everyone on one side: the test can see
the cascade it prevents.
"""

from bastion.core import commands as C
from bastion.core import events as E
from core_harness import only
from perp_harness import PERP, PX, USDT, PerpHarness, kinds

PAIRS = 30
BTC = 1_000  # lots


def market(guards: bool) -> PerpHarness:
    longs = list(range(10, 10 + PAIRS))
    shorts = list(range(100, 100 + PAIRS))
    h = PerpHarness(accounts=[1, 2, *longs, *shorts], margin=1_250 * USDT,  # 8x
                    insurance=5_000 * USDT, guards=guards, max_funding_e9=10_000_000)
    # a persistent 2% premium drives funding to its 1%/h cap for 12 hours
    h.expect_ok(h.do(C.AddMargin(account=1, asset="USDT", amount=100_000 * USDT)))
    h.expect_ok(h.do(C.AddMargin(account=2, asset="USDT", amount=100_000 * USDT)))
    h.expect_ok(h.order(1, "buy", 10, PX * 102 // 100))
    h.expect_ok(h.order(2, "sell", 10, PX * 103 // 100))
    for _ in range(12):
        h.index(PX, dt=3_598_000)
        h.index(PX, dt=1_000)
        assert not only(h.do(C.FundingTick(market=PERP), dt=1_000), E.FundingSettled)[0].paused
    pm = h.engine.perp.markets[PERP]
    assert pm.funding_index > 10 * PX * 10**9 // 100  # > 10% of the price, cumulated
    h.expect_ok(h.do(C.CancelAll(market=PERP, reason="setup")))
    for long, short in zip(longs, shorts, strict=True):
        h.open(long, short, BTC)
    h.index(PX)
    h.ok()
    return h


def snapshot(h: PerpHarness) -> tuple[object, ...]:
    pe = h.engine.perp
    return (sorted((p.account, p.size, p.cost) for p in pe.positions[PERP].values()),
            sorted((k, m.collateral) for k, m in pe.margins.items()))


def test_funding_index_reset_halts_and_liquidates_nothing():
    h = market(guards=True)
    before = snapshot(h)
    ev = h.do(C.FundingTick(market=PERP, index=0), dt=1_000)
    assert kinds(ev) == ["GuardTripped", "ModeChanged"]
    assert ev[0].guard == "funding_index_reset" and h.engine.markets[PERP].mode == "halted"
    assert snapshot(h) == before
    # the halted market acts on nothing, whatever the feeders say next
    ev = h.index(PX // 2)
    assert not only(ev, E.LiquidationStarted) and snapshot(h) == before
    h.ok()


def test_absurd_mark_halts_and_liquidates_nothing():
    h = market(guards=True)
    before = snapshot(h)
    ev = h.index(PX // 100)  # every source reports 1% of the price
    assert kinds(ev) == ["GuardTripped", "ModeChanged"] and ev[0].guard == "index_move"
    assert snapshot(h) == before
    assert h.engine.perp.markets[PERP].index == PX
    h.ok()


def test_without_guards_the_funding_reset_cascades():
    h = market(guards=False)
    ev = h.do(C.FundingTick(market=PERP, index=0), dt=1_000)
    liquidated = {e.account for e in only(ev, E.LiquidationStarted)}
    # every short paid back >10% of notional at 8x: all of them are liquidated at once
    assert len(liquidated) >= PAIRS
    assert h.engine.markets[PERP].mode == "open"
    h.ok()


def test_without_guards_the_absurd_mark_cascades():
    h = market(guards=False)
    ev = h.index(PX // 100)
    assert len({e.account for e in only(ev, E.LiquidationStarted)}) >= PAIRS
    assert only(ev, E.Deleveraged)  # far past bankruptcy: the fund cannot absorb it
    h.ok()
