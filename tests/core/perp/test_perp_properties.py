"""Stateful property test over perp commands, on two cross-margined markets.

After every step: funds conserved per asset (spot + fees + margin + insurance - position cost
== net deposits), positions net to zero per market, holds match open orders, no flat account
below zero, and every account whose markets are all live is at or above maintenance margin (the
liquidation index missed nobody, price moves and funding ticks alike). A restored copy must emit the same events from the moment it
was restored, and replaying the whole log must give the same state hash. The engine under test
re-checks one soft-crossed funding key per command (``MarginLedger.recheck_soft``); a twin that
re-checks them all within the tick must emit exactly the same events, so spreading re-checks
over commands neither misses nor invents a liquidation.
"""

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bastion.core import commands as C
from bastion.core import events as E
from bastion.core.codec import decode_command, decode_state, encode_command, encode_state
from bastion.core.engine import Engine
from perp_harness import LOT, PERP, PX, USDT, PerpHarness, perp_spec

ETH_PERP = "E-PERP"
EPX = 200_000
MARKETS = st.sampled_from([PERP, ETH_PERP])
ACCOUNTS = st.integers(1, 5)


class PerpMachine(RuleBasedStateMachine):
    @initialize(fund=st.sampled_from([0, 50 * USDT, 5_000 * USDT]))
    def setup(self, fund: int) -> None:
        self.h = PerpHarness(accounts=[1, 2, 3, 4, 5], margin=100 * USDT, insurance=fund,
                             taker_fee_ppm=500, maker_fee_ppm=-100, liq_fee_ppm=5_000,
                             max_move_bps=800, max_leverage=25, maintenance_ppm=20_000,
                             default_leverage=25, basis_window_ms=1_000)
        self.h.expect_ok(self.h.do(perp_spec(market=ETH_PERP, base="ETH", contract_size=10_000,
                                             min_qty=10_000, max_leverage=20,
                                             maintenance_ppm=25_000, default_leverage=20,
                                             liq_breaker_ppm=300_000)))
        self.price = {PERP: PX, ETH_PERP: EPX}
        self.lot = {PERP: LOT, ETH_PERP: 10_000}
        self.orders: list[tuple[int, str, int]] = []
        self.triggers: list[tuple[int, str, int]] = []
        self.restored: Engine | None = None
        self.h.engine.perp.recheck_budget = 1
        self.eager = Engine.from_state(self.h.engine.export_state())
        self.eager.perp.recheck_budget = 10**9
        self.index(PERP, 0)
        self.index(ETH_PERP, 0)

    def do(self, cmd: C.Command, dt: int = 250) -> list[E.Event]:
        events = self.h.do(cmd, dt)
        for e in events:
            if isinstance(e, E.OrderAccepted) and e.order_type != "liquidation":
                self.orders.append((e.account, e.market, e.order_id))
            if isinstance(e, E.TriggerAccepted):
                self.triggers.append((e.account, e.market, e.trigger_id))
        if self.restored is not None:
            assert self.restored.apply(cmd) == events
        assert self.eager.apply(cmd) == events
        return events

    def index(self, market: str, bps: int, stale: int = 0, dt: int = 250) -> list[E.Event]:
        self.price[market] = max(1_000, self.price[market] * (10_000 + bps) // 10_000)
        p = self.price[market]
        ts = self.h.ts + dt
        return self.do(C.UpdateIndex(market=market, sources=[
            C.SourcePrice(source="a", price=p, ts=ts - stale),
            C.SourcePrice(source="b", price=p + 7, ts=ts),
            C.SourcePrice(source="c", price=p - 3, ts=ts - 2 * stale)]), dt)

    # ------------------------------------------------------------------ rules

    ORDER = dict(account=ACCOUNTS, market=MARKETS, side=st.sampled_from(["buy", "sell"]),
                 off=st.integers(-12, 12), lots=st.integers(1, 80),
                 kind=st.sampled_from(["GTC", "GTC", "GTC", "IOC", "post", "market", "market",
                                       "reduce", "FOK"]))

    @rule(**ORDER)
    def place(self, account, market, side, off, lots, kind):
        price = max(1, self.price[market] * (10_000 + off * 10) // 10_000)
        kw: dict[str, object] = {}
        if kind == "market":
            kw = {"order_type": "market"}
            price = 0
        elif kind == "post":
            kw = {"post_only": True}
        elif kind == "reduce":
            kw = {"reduce_only": True}
        elif kind in ("IOC", "FOK"):
            kw = {"tif": kind}
        self.do(C.PlaceOrder(account=account, market=market, side=side, price=price,
                             qty=lots * self.lot[market], **kw))

    @rule(**ORDER)
    def place_more(self, account, market, side, off, lots, kind):
        self.place(account, market, side, off, lots, kind)

    @rule(buyer=ACCOUNTS, seller=ACCOUNTS, market=MARKETS, lots=st.integers(20, 250),
          off=st.integers(-5, 5))
    def trade(self, buyer, seller, market, lots, off):
        """A resting sell and a crossing buy: builds (leveraged) positions quickly."""
        ref = self.price[market]  # trade around the index so the mark follows it
        price = max(1, ref * (10_000 + off * 10) // 10_000) // 10 * 10
        qty = lots * self.lot[market]
        self.do(C.PlaceOrder(account=seller, market=market, side="sell", price=price, qty=qty))
        self.do(C.PlaceOrder(account=buyer, market=market, side="buy", price=price, qty=qty,
                             tif="IOC"))

    @rule(long=ACCOUNTS, short=ACCOUNTS, lots=st.integers(150, 250), down=st.booleans(),
          steps=st.integers(1, 4), book=st.booleans())
    def squeeze(self, long, short, lots, down, steps, book):
        """Open a leveraged position in a live market, then move the market against one side
        in 1.5% steps (optionally with bids/asks for liquidations to hit)."""
        if long == short:
            return
        self.mode(PERP, "open")
        self.trade(long, short, PERP, lots, 0)
        for _ in range(steps):
            self.index(PERP, -150 if down else 150)
            self.do(C.CancelAll(market=PERP, reason="requote"))
            self.trade(5, 4, PERP, 1, 0)
            if book:
                p = self.price[PERP]
                self.do(C.PlaceOrder(account=3, market=PERP, side="buy", price=p * 99 // 100,
                                     qty=40 * LOT))
                self.do(C.PlaceOrder(account=3, market=PERP, side="sell",
                                     price=p * 101 // 100, qty=40 * LOT))
            self.index(PERP, 0)

    def live_orders(self) -> list[tuple[int, str, int]]:
        live = self.h.engine.orders
        return [o for o in self.orders if o[2] in live]

    @precondition(lambda self: self.live_orders())
    @rule(data=st.data())
    def cancel(self, data):
        account, market, oid = data.draw(st.sampled_from(self.live_orders()))
        self.do(C.CancelOrder(account=account, market=market, order_id=oid))

    @precondition(lambda self: self.live_orders())
    @rule(data=st.data(), dprice=st.integers(-20, 20), dlots=st.integers(-5, 5))
    def amend(self, data, dprice, dlots):
        account, market, oid = data.draw(st.sampled_from(self.live_orders()))
        order = self.h.engine.orders[oid]
        self.do(C.AmendOrder(account=account, market=market, order_id=oid,
                             new_price=max(1, order.price + dprice * 10),
                             new_qty=max(self.lot[market], order.qty + dlots * self.lot[market])))

    @rule(market=MARKETS, bps=st.sampled_from([*range(-300, 301, 20), -5_000, 9_000]),
          stale=st.sampled_from([0, 0, 0, 0, 9_000]))
    def move(self, market, bps, stale):
        """Feeder update; now and then an implausible one, which must halt, not liquidate."""
        was_live = self.h.engine.perp.active(self.h.engine.perp.markets[market])
        events = self.index(market, bps, stale)
        if abs(bps) > 1_000 and was_live:
            assert not any(isinstance(e, E.Liquidated) for e in events)
        self.price[market] = self.h.engine.perp.markets[market].index or self.price[market]

    @rule(market=MARKETS, bps=st.sampled_from([-300, -200, 200, 300]), buyer=ACCOUNTS,
          seller=ACCOUNTS)
    def market_moves(self, market, bps, buyer, seller):
        """The index moves and the market requotes and trades there, so the mark follows."""
        self.index(market, bps)
        self.do(C.CancelAll(market=market, reason="requote"))
        self.trade(buyer, seller, market, 1, 0)
        self.index(market, 0)

    @rule(market=MARKETS, external=st.sampled_from([None, None, None, None, "small", "zero"]))
    def funding(self, market, external):
        pm = self.h.engine.perp.markets[market]
        index = None
        if external == "small":
            index = pm.funding_index + 12_345
        elif external == "zero":
            index = 0
        self.index(market, 0, dt=600_000)  # ten minutes on, with a fresh oracle
        self.do(C.FundingTick(market=market, index=index))

    @rule(market=MARKETS, up=st.booleans(), ticks=st.integers(1, 4),
          traders=st.lists(st.tuples(ACCOUNTS, ACCOUNTS), max_size=4))
    def funding_squeeze(self, market, up, ticks, traders):
        """The largest legal funding moves, interval after interval, with trades in between:
        funding alone must liquidate who it drains (the liquidation index's funding keys), and
        positions that settle lazily when they trade must keep the ledger exact."""
        pe = self.h.engine.perp
        for i in range(ticks):
            self.index(market, 0, dt=pe.markets[market].funding_interval_ms)
            pm = pe.markets[market]
            step = pm.max_funding_e9 * pm.mark * pm.funding_interval_ms \
                // pm.funding_interval_ms
            self.do(C.FundingTick(market=market,
                                  index=pm.funding_index + (step if up else -step)))
            if i < len(traders):
                buyer, seller = traders[i]
                self.trade(buyer, seller, market, 1, 0)

    @rule(account=ACCOUNTS, amount=st.integers(1, 60), add=st.booleans())
    def margin(self, account, amount, add):
        cmd = C.AddMargin if add else C.RemoveMargin
        self.do(cmd(account=account, asset="USDT", amount=amount * USDT))

    @rule(account=ACCOUNTS, market=MARKETS, leverage=st.integers(1, 25))
    def leverage(self, account, market, leverage):
        self.do(C.SetLeverage(account=account, market=market, leverage=leverage))

    @rule(account=ACCOUNTS, market=MARKETS, side=st.sampled_from(["buy", "sell"]),
          off=st.integers(-300, 300), lots=st.integers(1, 40),
          kind=st.sampled_from(["stop_market", "stop_limit", "take_profit", "take_profit_limit"]),
          reduce=st.booleans())
    def trigger(self, account, market, side, off, lots, kind, reduce):
        mark = self.h.engine.perp.markets[market].mark
        at = max(1, mark * (10_000 + off) // 10_000)
        price = at if kind.endswith("limit") else 0
        self.do(C.PlaceTrigger(account=account, market=market, side=side, qty=lots * self.lot[market],
                               trigger_price=at, order_type=kind, price=price,
                               reduce_only=reduce))

    @precondition(lambda self: self.triggers)
    @rule(data=st.data())
    def cancel_trigger(self, data):
        account, market, tid = data.draw(st.sampled_from(self.triggers))
        self.do(C.CancelTrigger(account=account, market=market, trigger_id=tid))

    @rule(market=MARKETS, mode=st.sampled_from(["open", "open", "open", "post_only",
                                                 "halted"]))
    def mode(self, market, mode):
        if self.h.engine.markets[market].mode != "open" and mode == "open":
            self.do(C.ResetOracle(market=market, reason="test"))  # a real move may have halted it
        if self.h.engine.markets[market].mode != mode:
            self.do(C.SetMarketMode(market=market, mode=mode, reason="test"))
        self.index(market, 0)

    @rule(account=ACCOUNTS)
    def wait(self, account):
        """Let the oracle go stale: everything risk-related must pause."""
        self.do(C.AddMargin(account=account, asset="USDT", amount=USDT), dt=70_000)

    @precondition(lambda self: self.restored is None)
    @rule()
    def restore(self):
        state = decode_state(encode_state(self.h.engine.export_state()))
        self.restored = Engine.from_state(state)
        assert self.restored.state_hash() == self.h.engine.state_hash()

    # ------------------------------------------------------------------ invariants

    @invariant()
    def ledger_is_sound(self):
        assert self.h.engine.check_invariants() == []

    @invariant()
    def nobody_live_is_left_below_maintenance(self):
        pe = self.h.engine.perp
        for who, positions in pe.held.items():
            if not positions or not pe.all_active(who):
                continue
            r = pe.risk(pe.margins[who])
            assert r.equity >= r.maintenance, (who, r)

    @invariant()
    def free_margin_is_risk_less_holds(self):
        """Order entry's inlined ``free_margin`` stays the ``risk`` it was inlined from, and
        the links it reads instead of walking state (``only``: the one position; ``levered``:
        any leverage setting) stay what they stand for."""
        pe = self.h.engine.perp
        for ma in pe.margins.values():
            r = pe.risk(ma)
            assert pe.available(ma) == r.equity - r.initial - ma.order_im, (ma, r)
            sole = list(ma.positions.values()) if len(ma.positions) == 1 else [None]
            assert ma.only is sole[0], ma
            assert ma.levered == bool(ma.leverage), ma

    def teardown(self):
        if not hasattr(self, "h"):
            return
        replay = Engine()
        for cmd in self.h.log:
            replay.apply(decode_command(encode_command(cmd)))
        assert replay.state_hash() == self.h.engine.state_hash()
        if self.restored is not None:
            assert self.restored.state_hash() == self.h.engine.state_hash()


PerpMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestPerpProperties = PerpMachine.TestCase
