"""Property-based tests: random command streams keep every invariant and replay exactly."""

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bastion.core import commands as C
from bastion.core import events as E
from bastion.core.codec import decode_command, decode_state, encode_command, encode_state
from bastion.core.engine import Engine
from core_harness import LOT, PX, Harness

ACCOUNTS = st.integers(1, 4)
MARKETS = st.sampled_from(["BTC-USDT", "ETH-USDT"])
MID = {"BTC-USDT": PX, "ETH-USDT": 300_000}
LOTS = {"BTC-USDT": LOT, "ETH-USDT": 10_000}


class ExchangeMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.h = Harness(accounts=[1, 2, 3, 4])
        self.order_ids: list[int] = []
        self.restored: Engine | None = None

    def do(self, cmd: C.Command, dt: int = 1) -> list[E.Event]:
        events = self.h.do(cmd, dt)
        for e in events:
            if isinstance(e, E.OrderAccepted):
                self.order_ids.append(e.order_id)
        if self.restored is not None:
            assert self.restored.apply(cmd) == events
        return events

    @rule(account=ACCOUNTS, market=MARKETS, side=st.sampled_from(["buy", "sell"]),
          off=st.integers(-2, 6), lots=st.integers(1, 40),
          kind=st.sampled_from(["GTC", "GTC", "IOC", "FOK", "post", "market"]),
          stp=st.sampled_from([None, "expire_taker", "expire_maker", "expire_both", "none"]),
          cid=st.sampled_from(["", "", "a", "b"]))
    def place(self, account, market, side, off, lots, kind, stp, cid):
        px = MID[market] + (-off if side == "buy" else off) * 10  # off < 0 crosses
        fields = dict(account=account, market=market, side=side, qty=lots * LOTS[market],
                      price=px, stp=stp, client_id=cid)
        if kind == "market":
            fields.update(order_type="market", price=0)
        elif kind == "post":
            fields.update(post_only=True)
        else:
            fields.update(tif=kind)
        self.do(C.PlaceOrder(**fields))  # type: ignore[arg-type]

    @precondition(lambda self: self.order_ids)
    @rule(data=st.data(), account=ACCOUNTS)
    def cancel(self, data, account):
        oid = data.draw(st.sampled_from(self.order_ids))
        order = self.h.engine.orders.get(oid)
        market = order.market if order else "BTC-USDT"
        self.do(C.CancelOrder(account=order.account if order else account, market=market,
                              order_id=oid))

    @precondition(lambda self: self.h.engine.orders)
    @rule(data=st.data(), dprice=st.integers(-3, 3), dlots=st.integers(-5, 5))
    def amend(self, data, dprice, dlots):
        oid = data.draw(st.sampled_from(sorted(self.h.engine.orders)))
        order = self.h.engine.orders[oid]
        lot = LOTS[order.market]
        self.do(C.AmendOrder(account=order.account, market=order.market, order_id=oid,
                             new_price=order.price + dprice * 10 if dprice else None,
                             new_qty=max(lot, order.qty + dlots * lot) if dlots else None))

    @rule(account=st.integers(0, 4), market=st.sampled_from(["", "BTC-USDT", "ETH-USDT"]))
    def cancel_all(self, account, market):
        self.do(C.CancelAll(account=account, market=market, reason="prop"))

    @rule(market=MARKETS, mode=st.sampled_from(["open", "post_only", "cancel_only", "recovery",
                                                "halted", "open", "open"]),
          dur=st.integers(1, 50))
    def set_mode(self, market, mode, dur):
        self.do(C.SetMarketMode(market=market, mode=mode, reason="prop",
                                until_ts=self.h.ts + dur if mode == "recovery" else 0))

    @rule(market=MARKETS, off=st.integers(-30, 30))
    def ref_price(self, market, off):
        self.do(C.SetReferencePrice(market=market, price=MID[market] + off * 10))

    @rule(account=st.integers(1, 6), asset=st.sampled_from(["USDT", "BTC", "ETH"]),
          amount=st.integers(1, 10**12), out=st.booleans())
    def funds(self, account, asset, amount, out):
        cmd = C.Withdraw if out else C.Deposit
        self.do(cmd(account=account, asset=asset, amount=amount, reason="prop"))

    @rule(market=MARKETS, maker=st.integers(-500, 500), taker=st.integers(0, 1000))
    def fees(self, market, maker, taker):
        self.do(C.UpdateMarket(market=market, maker_fee_ppm=maker, taker_fee_ppm=taker,
                               reason="prop"))

    @rule(account=ACCOUNTS, stp=st.sampled_from(["expire_taker", "expire_maker", "expire_both"]))
    def stp(self, account, stp):
        self.do(C.SetAccountSTP(account=account, stp=stp))

    @rule(dt=st.integers(1, 100))
    def tick(self, dt):
        self.do(C.SetReferencePrice(market="ETH-USDT", price=MID["ETH-USDT"]), dt=dt)

    @precondition(lambda self: self.restored is None)
    @rule()
    def snapshot_and_restore(self):
        state = decode_state(encode_state(self.h.engine.export_state()))
        self.restored = Engine.from_state(state)
        assert self.restored.state_hash() == self.h.engine.state_hash()

    @invariant()
    def invariants_hold(self):
        assert self.h.engine.check_invariants() == []

    def teardown(self):
        if not hasattr(self, "h"):
            return
        fresh = Engine()
        for cmd in self.h.log:
            fresh.apply(decode_command(encode_command(cmd)))
        assert fresh.state_hash() == self.h.engine.state_hash()
        if self.restored is not None:
            assert self.restored.state_hash() == self.h.engine.state_hash()


ExchangeMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestExchange = ExchangeMachine.TestCase


def test_state_hash_sees_any_divergence():
    a, b = Harness(), Harness()
    assert a.engine.state_hash() == b.engine.state_hash()
    a.place(1, "buy", 1, PX - 10)
    b.place(1, "buy", 1, PX - 20)
    assert a.engine.state_hash() != b.engine.state_hash()
