"""Perpetuals through the engine: PnL, margin, funding, liquidation, insurance, ADL, TP/SL."""

import pytest

from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.engine import Engine
from bastion.core.perp.state import RATE_SCALE
from core_harness import only
from perp_harness import DIV, LOT, PERP, PX, USDT, PerpHarness, code, kinds

BTC = 1_000  # lots in one BTC


# ---------------------------------------------------------------------------- market and oracle

def test_create_rejects_unsound_specs():
    h = PerpHarness()
    assert code(h.do(C.CreatePerpMarket(market=PERP, base="BTC", settle="USDT",
                                        price_decimals=2, tick_size=1, contract_size=LOT,
                                        min_qty=LOT, max_qty=LOT))) == X.MARKET_EXISTS
    bad = dict(market="X-PERP", base="BTC", settle="USDT", price_decimals=2, tick_size=1,
               contract_size=LOT, min_qty=LOT, max_qty=10 * LOT)
    # maintenance 10% at 10x: a fresh position would already be liquidatable
    assert code(h.do(C.CreatePerpMarket(**bad, max_leverage=10, maintenance_ppm=100_000))) \
        == X.INVALID_MARKET_SPEC
    tiers = [C.MarginTier(max_notional=10**12, max_leverage=10, maintenance_ppm=20_000),
             C.MarginTier(max_notional=10**11, max_leverage=5, maintenance_ppm=50_000)]
    assert code(h.do(C.CreatePerpMarket(**bad, tiers=tiers))) == X.INVALID_MARKET_SPEC
    assert code(h.do(C.CreatePerpMarket(**bad, min_sources=0))) == X.INVALID_MARKET_SPEC
    assert code(h.do(C.UpdateIndex(market="BTC-USDT", sources=[]))) == X.NOT_PERP


def test_index_drops_stale_sources_and_clamps_outliers():
    h = PerpHarness(source_band_bps=100)
    ev = h.index(PX, sources=[("a", PX, 0), ("b", PX + 100, 10), ("c", 2 * PX, 0),
                              ("d", PX, 60_000)])
    upd = only(ev, E.IndexUpdated)[0]
    assert (upd.used, upd.dropped) == (3, 1)
    # median of the fresh ones is PX + 100; the 2x outlier is clamped to +1% of it
    assert upd.index == (PX + PX + 100 + (PX + 100) * 101 // 100) // 3
    assert code(h.index(PX, sources=[("a", PX, 0), ("b", PX, 6_000)])) == X.ORACLE_STALE
    assert code(h.index(PX, sources=[("a", PX, 0), ("a", PX, 0)])) == X.INVALID_ARGUMENT


def test_mark_is_the_median_and_stays_in_the_band():
    h = PerpHarness()
    h.open(1, 2, 10, PX + 5_000)  # last trade 0.5% above the index
    upd = only(h.index(PX), E.IndexUpdated)[0]
    assert PX <= upd.mark <= PX + 5_000
    assert h.engine.markets[PERP].ref_price == PX  # the index is the post-only fair price


def test_oracle_jump_halts_the_market_and_acts_on_nothing():
    h = PerpHarness()
    before = h.engine.perp.markets[PERP].index
    ev = h.index(PX * 12 // 10)  # +20% within the window, 10% allowed
    assert kinds(ev) == ["GuardTripped", "ModeChanged"]
    assert ev[0].guard == "index_move"
    assert h.engine.markets[PERP].mode == "halted"
    assert h.engine.perp.markets[PERP].index == before
    # only an operator in a restricted mode can re-anchor
    h.do(C.SetMarketMode(market=PERP, mode="open", reason="x"))
    assert code(h.do(C.ResetOracle(market=PERP, reason="x"))) == X.MARKET_MODE
    h.do(C.SetMarketMode(market=PERP, mode="halted", reason="x"))
    h.expect_ok(h.do(C.ResetOracle(market=PERP, reason="BTC really moved")))
    assert only(h.index(PX * 12 // 10), E.IndexUpdated)
    h.ok()


# ---------------------------------------------------------------------------- orders and margin

def test_order_rejects():
    h = PerpHarness(accounts=[1, 2, 3], margin=100 * USDT)
    h.expect_ok(h.do(perp_spec_market("N-PERP")))
    assert code(h.do(C.PlaceOrder(account=1, market="N-PERP", side="buy", qty=LOT,
                                  price=PX))) == X.NO_MARK_PRICE
    # 100 USDT at 10x buys at most 1000 USDT of notional: 0.1 BTC
    assert code(h.order(1, "buy", 101)) == X.INSUFFICIENT_MARGIN
    h.open(1, 2, 99)
    assert code(h.order(1, "buy", 1, PX * 13 // 10)) == X.PRICE_BAND
    assert code(h.order(1, "buy", 1, reduce_only=True)) == X.REDUCE_ONLY
    assert code(h.order(3, "sell", 1, reduce_only=True)) == X.REDUCE_ONLY
    assert code(h.do(C.SetLeverage(account=1, market=PERP, leverage=11))) == X.INVALID_LEVERAGE
    assert code(h.do(C.SetLeverage(account=1, market=PERP, leverage=2))) \
        == X.INSUFFICIENT_MARGIN
    assert code(h.do(C.SetLeverage(account=1, market=PERP, leverage=10))) == X.NO_CHANGE
    h.expect_ok(h.do(C.SetLeverage(account=3, market=PERP, leverage=1)))
    assert code(h.order(3, "buy", 11)) == X.INSUFFICIENT_MARGIN  # 1x: 100 USDT buys 0.01 BTC
    assert code(h.do(C.AddMargin(account=1, asset="BTC", amount=1))) == X.INVALID_ARGUMENT
    assert code(h.do(C.AddMargin(account=1, asset="USDT", amount=10**17))) \
        == X.INSUFFICIENT_FUNDS
    assert code(h.do(C.FundInsurance(asset="USDT", amount=1, reason=""))) \
        == X.INVALID_ARGUMENT
    h.ok()


def perp_spec_market(name: str) -> C.CreatePerpMarket:
    from perp_harness import perp_spec
    return perp_spec(market=name)


def test_margin_hold_and_release():
    h = PerpHarness(margin=1_000 * USDT)
    h.expect_ok(h.order(1, "buy", 500))  # 5,000 USDT notional at 10x: 500 USDT held
    ma = h.engine.perp.margins[(1, "USDT")]
    assert ma.order_im == 500 * USDT
    oid = h.engine.next_order_id - 1
    h.expect_ok(h.do(C.AmendOrder(account=1, market=PERP, order_id=oid, new_qty=200 * LOT)))
    assert ma.order_im == 200 * USDT
    h.expect_ok(h.do(C.CancelOrder(account=1, market=PERP, order_id=oid)))
    assert ma.order_im == 0
    h.ok()


def test_pnl_realized_and_unrealized():
    h = PerpHarness(taker_fee_ppm=500, maker_fee_ppm=200, margin=2_000 * USDT)
    h.open(1, 2, BTC)  # 1 BTC at 10,000: 1 pays 5 USDT taker fee, 2 pays 2 USDT maker fee
    assert h.coll(1) == 2_000 * USDT - 5 * USDT and h.coll(2) == 2_000 * USDT - 2 * USDT
    h.index(PX * 105 // 100)  # mark ~10,500 (+ a tiny funding term)
    r = h.engine.perp.risk(h.engine.perp.margins[(1, "USDT")])
    mark = h.engine.perp.markets[PERP].mark
    assert r.upnl == BTC * LOT * mark // DIV - 10_000 * USDT
    # close at 10,600 against account 3: +600 realized, minus 5.30 taker fee
    h.expect_ok(h.order(3, "buy", BTC, 1_060_000))
    h.expect_ok(h.order(1, "sell", BTC, 1_060_000))
    assert h.pos(1) == 0
    assert h.coll(1) == 2_000 * USDT - 5 * USDT + 600 * USDT - 530_000_000
    assert h.engine.perp.markets[PERP].open_interest == BTC * LOT
    h.ok()


def test_add_and_remove_margin():
    h = PerpHarness(margin=1_000 * USDT)
    h.open(1, 2, 500)  # 5,000 USDT notional: 500 USDT initial margin
    assert code(h.do(C.RemoveMargin(account=1, asset="USDT", amount=501 * USDT))) \
        == X.INSUFFICIENT_MARGIN
    h.expect_ok(h.do(C.RemoveMargin(account=1, asset="USDT", amount=400 * USDT)))
    # unrealized profit does not count as removable
    h.index(PX * 11 // 10)
    h.index(PX * 11 // 10)
    assert code(h.do(C.RemoveMargin(account=1, asset="USDT", amount=150 * USDT))) \
        == X.INSUFFICIENT_MARGIN
    # recovery mode (OKX): add margin is accepted, removal waits for a live oracle
    h.do(C.SetMarketMode(market=PERP, mode="recovery", reason="failover",
                         until_ts=h.ts + 60_000))
    h.expect_ok(h.do(C.AddMargin(account=1, asset="USDT", amount=50 * USDT)))
    assert code(h.do(C.RemoveMargin(account=1, asset="USDT", amount=1))) == X.ORACLE_STALE
    h.ok()


def test_reduce_only_clipped_across_levels_and_partial_fills():
    h = PerpHarness()
    h.open(1, 2, 5)
    # clipped at placement to the 5 lots held
    ev = h.expect_ok(h.order(1, "sell", 10, PX + 100, reduce_only=True))
    assert only(ev, E.OrderAccepted)[0].qty == 5 * LOT
    h.expect_ok(h.do(C.CancelAll(account=1, market=PERP)))
    # two resting reduce-only sells of 4 lots each, 8 > 5 held
    h.expect_ok(h.order(1, "sell", 4, PX + 100, reduce_only=True))
    h.expect_ok(h.order(1, "sell", 4, PX + 200, reduce_only=True))
    ev = h.expect_ok(h.order(3, "buy", 10, PX + 300))
    trades = only(ev, E.Trade)
    assert [(t.price, t.qty) for t in trades] == [(PX + 100, 4 * LOT), (PX + 200, LOT)]
    assert only(ev, E.OrderAmended)[0].remaining == LOT  # the second one clipped mid-sweep
    assert h.pos(1) == 0
    h.expect_ok(h.do(C.CancelAll(account=3, market=PERP)))
    # a reduce-only taker across levels stops exactly at flat
    h.open(1, 2, 3)
    h.expect_ok(h.order(4, "buy", 2, PX - 100))
    h.expect_ok(h.order(4, "buy", 5, PX - 200))
    ev = h.expect_ok(h.order(1, "sell", 9, PX - 300, reduce_only=True, tif="IOC"))
    assert sum(t.qty for t in only(ev, E.Trade)) == 3 * LOT and h.pos(1) == 0
    h.ok()


# ---------------------------------------------------------------------------- funding

def funded_market(**kw: object) -> PerpHarness:
    h = PerpHarness(**kw)
    h.open(1, 2, BTC)
    h.open(3, 4, 333)
    return h


def tick(h: PerpHarness, **kw: object) -> list[E.Event]:
    h.index(PX, dt=3_600_000 - 2_000)
    return h.do(C.FundingTick(market=PERP, **kw), dt=1_000)  # type: ignore[arg-type]


def test_funding_payments_are_exact_and_zero_sum():
    h = funded_market()
    before = {a: h.coll(a) for a in (1, 2, 3, 4)}
    ev = only(tick(h), E.FundingSettled)[0]
    pm = h.engine.perp.markets[PERP]
    # no premium (empty book): rate = interest 0.01% per interval, dt capped at one interval
    assert ev.rate_e9 == 100_000 and not ev.paused
    assert ev.index == 100_000 * pm.mark * ev.dt // 3_600_000
    den = DIV * RATE_SCALE
    pay1 = -(-BTC * LOT * ev.index // den)
    assert before[1] - h.coll(1) == pay1 and h.coll(2) - before[2] == BTC * LOT * ev.index // den
    moved = sum(h.coll(a) - before[a] for a in (1, 2, 3, 4))
    assert -2 <= moved <= 0  # payers round up, receivers down: at most 1 unit per position pair
    assert ev.paid == (BTC + 333) * LOT * ev.index // den  # what the longs owe, in total
    # the tick moved the index only; positions settle when touched, through the market's pool
    pe = h.engine.perp
    assert all(p.funding_index == 0 for p in pe.positions[PERP].values())
    assert pe.markets[PERP].funding_pool == 0
    h.ok()
    h.expect_ok(h.order(1, "sell", BTC, reduce_only=True))  # both close: each settles first
    h.expect_ok(h.order(2, "buy", BTC, reduce_only=True))
    assert h.pos(1) == h.pos(2) == 0
    assert h.coll(1) == before[1] - pay1 and h.coll(2) == before[2] + BTC * LOT * ev.index // den
    assert pe.markets[PERP].funding_pool == pay1 - BTC * LOT * ev.index // den  # the dust
    assert pe.positions[PERP][3].funding_index == 0  # untouched: still owes, counted in equity
    h.ok()


def test_funding_follows_the_premium():
    h = funded_market()
    h.expect_ok(h.order(3, "buy", 1, PX + 3_000))   # bids 0.3% over the index
    h.expect_ok(h.order(4, "sell", 1, PX + 4_000))
    for _ in range(5):
        h.index(PX)
    ev = only(tick(h), E.FundingSettled)[0]
    assert ev.rate_e9 > 1_000_000 and h.coll(1) < h.coll(2)  # longs pay shorts


def test_funding_paused_in_restricted_modes_and_until_a_fresh_index():
    h = funded_market()
    h.do(C.SetMarketMode(market=PERP, mode="post_only", reason="maintenance"))
    h.index(PX)
    ev = only(h.do(C.FundingTick(market=PERP), dt=1_000), E.FundingSettled)[0]
    assert ev.paused and ev.index == 0
    h.do(C.SetMarketMode(market=PERP, mode="open", reason="done"))
    # open again but no index since: still paused
    assert only(h.do(C.FundingTick(market=PERP), dt=1_000), E.FundingSettled)[0].paused
    h.index(PX)
    assert not only(h.do(C.FundingTick(market=PERP), dt=1_000), E.FundingSettled)[0].paused
    h.ok()


def test_funding_guard_refuses_reset_and_jump_but_accepts_legal_index():
    h = funded_market()
    only(tick(h), E.FundingSettled)
    pm = h.engine.perp.markets[PERP]
    legal = pm.funding_index + 1_000
    h.index(PX)
    assert only(h.do(C.FundingTick(market=PERP, index=legal), dt=1_000), E.FundingSettled)
    h.index(PX)
    ev = h.do(C.FundingTick(market=PERP, index=0), dt=1_000)
    assert kinds(ev) == ["GuardTripped", "ModeChanged"] and ev[0].guard == "funding_index_reset"
    assert pm.funding_index == legal
    h.do(C.SetMarketMode(market=PERP, mode="open", reason="checked"))
    h.index(PX)
    ev = h.do(C.FundingTick(market=PERP, index=legal + 10**15), dt=1_000)
    assert ev[0].guard == "funding_index_jump"
    h.ok()


# ---------------------------------------------------------------------------- liquidation

def test_liquidation_steps_through_the_book_and_pays_the_fund():
    h = PerpHarness(insurance=100 * USDT, liq_fee_ppm=5_000)
    h.open(1, 2, BTC)  # 10x long: liquidation below ~9,473.68
    h.expect_ok(h.order(3, "buy", 300, 946_000))
    h.expect_ok(h.order(3, "buy", 300, 945_000))
    fund = h.coll(0)
    ev = h.index(946_500)
    assert kinds(ev)[:3] == ["IndexUpdated", "LiquidationStarted", "OrderAccepted"]
    liq = only(ev, E.Liquidated)
    assert [(x.via, x.qty) for x in liq] == [("book", 200 * LOT)]  # one 20% step sufficed
    assert h.coll(0) - fund == liq[0].fee == liq[0].notional * 5_000 // 1_000_000
    r = h.engine.perp.risk(h.engine.perp.margins[(1, "USDT")])
    assert r.equity >= r.maintenance and h.pos(1) == 800 * LOT
    h.ok()


def test_liquidation_cancels_open_orders_first():
    h = PerpHarness(insurance=1_000 * USDT)
    h.open(1, 2, BTC)
    oid = only(h.expect_ok(h.order(1, "sell", 10, PX + 50_000, reduce_only=True)),
               E.OrderAccepted)[0].order_id
    ev = h.index(940_000)
    cancel = only(ev, E.OrderCanceled)[0]
    assert (cancel.order_id, cancel.reason) == (oid, "LIQUIDATION")
    assert kinds(ev).index("OrderCanceled") < kinds(ev).index("Liquidated")
    assert not [o for o in h.engine.orders.values() if o.account == 1]
    h.ok()


@pytest.mark.parametrize("restored", [False, True])
def test_liquidation_cancels_every_open_order_in_id_order(restored: bool) -> None:
    """One order is indexed on the margin record, the rest in the account's set; a cancel
    frees the record's place for a later (higher) id while lower ids stay in the set."""
    h = PerpHarness(insurance=1_000 * USDT)
    h.open(1, 2, BTC)
    ids = [only(h.expect_ok(h.order(1, "sell", 10, PX + k * 10_000, reduce_only=True)),
                E.OrderAccepted)[0].order_id for k in (5, 6, 7)]
    h.expect_ok(h.do(C.CancelOrder(account=1, market=PERP, order_id=ids[0])))
    ids.append(only(h.expect_ok(h.order(1, "sell", 10, PX + 80_000, reduce_only=True)),
                    E.OrderAccepted)[0].order_id)
    if restored:
        h.engine = Engine.from_state(h.engine.export_state())
    h.ok()
    ev = h.index(940_000)
    assert [c.order_id for c in only(ev, E.OrderCanceled) if c.reason == "LIQUIDATION"] \
        == ids[1:]
    assert not [o for o in h.engine.orders.values() if o.account == 1]
    h.ok()


def test_insurance_takes_what_the_book_cannot_at_the_bankruptcy_price():
    h = PerpHarness(insurance=1_000 * USDT)
    h.open(1, 2, BTC)
    ev = h.index(940_000)  # empty book: nothing to sell into
    liq = only(ev, E.Liquidated)
    assert [(x.via, x.qty) for x in liq] == [("insurance", BTC * LOT)]
    # bankruptcy: entry 10,000 minus 1,000 USDT of margin per BTC
    assert liq[0].notional == 9_000 * USDT
    assert h.pos(1) == 0 and h.coll(1) == 0
    fund = h.engine.perp.positions[PERP][0]
    assert (fund.size, fund.cost) == (BTC * LOT, 9_000 * USDT)
    h.ok()


def test_adl_when_the_fund_cannot_cover_ranked_by_pnl_and_leverage():
    h = PerpHarness(accounts=[1, 2, 3, 4], margin=1_000 * USDT)
    h.open(1, 2, 500)
    h.open(1, 3, 500)
    h.expect_ok(h.do(C.AddMargin(account=3, asset="USDT", amount=9_000 * USDT)))  # 3: low lev
    ev = h.index(940_000)
    adl = only(ev, E.Deleveraged)
    assert [d.account for d in adl] == [2, 3]  # 2 has the same PnL% at higher leverage
    assert sum(d.notional for d in adl) == only(ev, E.Liquidated)[-1].notional == 9_000 * USDT
    assert h.pos(1) == h.pos(2) == h.pos(3) == 0 and h.coll(1) == 0
    h.ok()


def test_liquidation_circuit_breaker_halts_instead_of_liquidating():
    h = PerpHarness(insurance=10_000 * USDT, liq_breaker_ppm=100_000)  # 10% of OI per minute
    h.open(1, 2, BTC)
    h.open(3, 4, BTC)
    ev = h.index(940_000)
    assert "Liquidated" not in kinds(ev)
    trip = only(ev, E.GuardTripped)
    assert trip and trip[0].guard == "liquidation_breaker"
    assert h.engine.markets[PERP].mode == "halted" and h.pos(1) == BTC * LOT
    h.ok()


def test_restricted_modes_pause_liquidations_until_a_fresh_index():
    h = PerpHarness(insurance=1_000 * USDT)
    h.open(1, 2, BTC)
    h.do(C.SetMarketMode(market=PERP, mode="post_only", reason="reopening"))
    ev = h.index(940_000)
    assert "LiquidationStarted" not in kinds(ev)
    h.do(C.SetMarketMode(market=PERP, mode="open", reason="reopened"))
    assert h.pos(1) == BTC * LOT  # reopening alone acts on nothing
    h.do(C.AddMargin(account=2, asset="USDT", amount=USDT))
    assert h.pos(1) == BTC * LOT
    ev = h.index(940_000)  # the first fresh index after reopening
    assert "LiquidationStarted" in kinds(ev) and h.pos(1) == 0
    h.ok()


def test_stale_oracle_pauses_liquidations():
    h = PerpHarness(insurance=1_000 * USDT)
    h.open(1, 2, BTC)
    h.index(950_000)
    h.do(C.AddMargin(account=3, asset="USDT", amount=USDT), dt=120_000)  # index now stale
    assert h.pos(1) == BTC * LOT
    assert not h.engine.perp.active(h.engine.perp.markets[PERP])


def test_mark_update_checks_only_crossed_accounts():
    """The index keys accounts by liquidation price: a mark move that crosses nobody pops
    nothing, however many positions are open."""
    h = PerpHarness(accounts=list(range(1, 202)), margin=1_000 * USDT)
    for a in range(1, 201, 2):
        h.open(a, a + 1, BTC)  # 10x: longs liquidatable below ~9,473.68
    liq = h.engine.perp.liq
    sizes = liq.size(PERP)
    versions = {asset: dict(v) for asset, v in liq.version.items()}
    assert sizes >= 200
    h.index(PX * 101 // 100)
    assert liq.size(PERP) == sizes and liq.version == versions  # nobody popped or re-keyed
    ev = h.index(PX * 94 // 100)  # -6%: crosses the longs' keys
    assert len(only(ev, E.LiquidationStarted)) == 100
    h.ok()


def test_funding_tick_spreads_soft_rechecks_over_the_following_commands():
    """A tick that half-uses many funding allowances at once re-checks at most the budget of
    them per command, in the tick and after it, until all are renewed; nobody is left behind."""
    h = PerpHarness(accounts=list(range(1, 41)), margin=1_000 * USDT)
    for a in range(1, 40, 2):
        h.open(a, a + 1, BTC)
    pe = h.engine.perp
    pe.recheck_budget = 3
    pm = pe.markets[PERP]
    longs = [(a, "USDT") for a in range(1, 40, 2)]
    soft = max(pe.liq.entry(w, PERP)[3] for w in longs)
    hard = min(pe.liq.entry(w, PERP)[2] for w in longs)
    assert pm.funding_index < soft < hard
    while pm.funding_index < soft:  # legal steps, landing on the soft keys exactly
        h.index(PX, dt=3_600_000 - 2_000)
        versions = {w: pe.liq.version_of(w) for w in longs}
        step = pm.max_funding_e9 * pm.mark * 3_600_000 // pm.funding_interval_ms
        h.expect_ok(h.do(C.FundingTick(market=PERP, index=min(pm.funding_index + step, soft)),
                         dt=1_000))
    rechecked = {w for w in longs if pe.liq.version_of(w) != versions[w]}
    assert len(rechecked) == 3 and PERP in pe.soft_markets
    for _ in range(6):
        versions = {w: pe.liq.version_of(w) for w in longs}
        h.index(PX)
        now = {w for w in longs if pe.liq.version_of(w) != versions[w]}
        assert len(now) <= 3 and not now & rechecked
        rechecked |= now
    assert rechecked == set(longs) and not pe.soft_markets
    assert all(pe.liq.entry(w, PERP)[3] > pm.funding_index for w in longs)  # renewed
    h.ok()


# ---------------------------------------------------------------------------- TP/SL

def trigger(h: PerpHarness, account: int, side: str, lots: int, at: int, kind: str,
            **kw: object) -> list[E.Event]:
    return h.do(C.PlaceTrigger(account=account, market=PERP, side=side,  # type: ignore[arg-type]
                               qty=lots * LOT, trigger_price=at, order_type=kind,  # type: ignore[arg-type]
                               **kw))  # type: ignore[arg-type]


def test_stop_loss_and_take_profit_fire_on_the_mark():
    h = PerpHarness()
    h.open(1, 2, 10)
    h.expect_ok(h.order(3, "buy", 20, 980_000))
    h.expect_ok(h.order(4, "sell", 20, 986_000))
    h.expect_ok(trigger(h, 1, "sell", 10, 985_000, "stop_market"))
    h.expect_ok(trigger(h, 2, "buy", 10, 985_000, "take_profit"))
    assert code(trigger(h, 1, "sell", 10, 1_010_000, "stop_market")) == X.WOULD_TRIGGER
    assert not only(h.index(990_000), E.TriggerFired)
    h.expect_ok(h.order(3, "buy", 1, 986_000))  # the market trades lower too
    ev = h.index(984_000)
    assert only(ev, E.IndexUpdated)[0].mark <= 985_000
    fired = only(ev, E.TriggerFired)
    assert [f.result for f in fired] == ["", ""]
    assert h.pos(1) == 0 and h.pos(2) == 0
    h.ok()


def test_stop_limit_rests_and_triggers_survive_cancel_all():
    h = PerpHarness()
    ev = h.expect_ok(trigger(h, 1, "buy", 5, 1_010_000, "stop_limit", price=1_011_000,
                             reduce_only=False, client_id="sl"))
    tid = only(ev, E.TriggerAccepted)[0].trigger_id
    h.expect_ok(h.order(1, "buy", 1, PX - 1_000))
    h.expect_ok(h.do(C.CancelAll(account=1)))
    assert tid in h.engine.perp.triggers.by_id
    ev = h.index(1_012_000)
    assert only(ev, E.TriggerFired)[0].order_id
    assert any(o.price == 1_011_000 for o in h.engine.orders.values())
    assert code(h.do(C.CancelTrigger(account=1, market=PERP, client_id="sl"))) \
        == X.UNKNOWN_TRIGGER
    h.ok()


def test_triggers_paused_in_restricted_modes():
    h = PerpHarness()
    h.open(1, 2, 10)
    h.expect_ok(h.order(3, "buy", 20, 980_000))
    h.expect_ok(trigger(h, 1, "sell", 10, 985_000, "stop_market"))
    h.do(C.SetMarketMode(market=PERP, mode="cancel_only", reason="incident"))
    assert not only(h.index(984_000), E.TriggerFired)
    h.do(C.SetMarketMode(market=PERP, mode="open", reason="over"))
    assert h.pos(1) == 10 * LOT
    assert only(h.index(984_000), E.TriggerFired)
    h.ok()


def test_cancel_trigger():
    h = PerpHarness()
    ev = h.expect_ok(trigger(h, 1, "sell", 1, 900_000, "stop_market", reduce_only=False))
    tid = only(ev, E.TriggerAccepted)[0].trigger_id
    assert code(h.do(C.CancelTrigger(account=2, market=PERP, trigger_id=tid))) \
        == X.UNKNOWN_TRIGGER
    assert kinds(h.do(C.CancelTrigger(account=1, market=PERP, trigger_id=tid))) \
        == ["TriggerCanceled"]


@pytest.mark.parametrize("mode", ["halted", "closed"])
def test_no_triggers_placed_when_the_market_accepts_nothing(mode):
    h = PerpHarness()
    h.do(C.SetMarketMode(market=PERP, mode=mode, reason="x"))  # type: ignore[arg-type]
    assert code(trigger(h, 1, "sell", 1, 900_000, "stop_market")) == X.MARKET_MODE


def test_flat_loss_is_covered_by_the_fund_and_a_broke_fund_is_not_liquidated():
    """An account that closes below zero is topped up by the fund (which may go negative and
    says so); a flat fund is never 'liquidated'."""
    h = PerpHarness(insurance=10 * USDT, max_move_bps=5_000, price_band_bps=5_000)
    h.open(1, 2, 1_000)
    h.do(C.SetMarketMode(market=PERP, mode="post_only", reason="liquidations paused"))
    h.index(PX * 80 // 100)  # 1 is now far past bankruptcy, but nothing acts on it
    h.do(C.SetMarketMode(market=PERP, mode="open", reason="reopen"))  # disarmed: no new index
    h.expect_ok(h.order(3, "buy", 1_000, PX * 80 // 100))
    ev = h.expect_ok(h.order(1, "sell", 1_000, PX * 80 // 100, reduce_only=True))
    covered = only(ev, E.LossCovered)
    assert covered and covered[0].account == 1 and covered[0].shortfall > 0
    assert h.coll(1) == 0 and h.coll(0) < 0
    assert "LiquidationStarted" not in kinds(ev)
    ev = h.expect_ok(h.do(C.FundInsurance(asset="USDT", amount=USDT, reason="recapitalise")))
    assert kinds(ev) == ["InsuranceFunded"]
    h.ok()


def test_liquidation_index_versions_stay_out_of_the_garbage_collector():
    """The per-account versions are keyed by plain ints: a dict keyed by fresh tuples gets
    tracked again, and every young collection would walk all of its entries (milliseconds at
    100k positions)."""
    import gc

    h = PerpHarness(accounts=list(range(1, 11)), margin=1_000 * USDT)
    for a in range(1, 10, 2):
        h.open(a, a + 1, BTC)
    gc.collect()
    for a in range(1, 11):  # each re-keys its account under a fresh (account, asset) tuple
        h.expect_ok(h.do(C.AddMargin(account=a, asset="USDT", amount=USDT)))
    versions = h.engine.perp.liq.version["USDT"]
    assert len(versions) == 10 and not gc.is_tracked(versions)
