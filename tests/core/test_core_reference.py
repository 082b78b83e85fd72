"""The engine against the reference matcher (tests/reference_matcher.py) on random streams:
the same accepted orders, amends, fills, prices, quantities, fees, self-trade outcomes, FOK and
IOC decisions, reject codes and balances, command by command."""

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.core import commands as C
from bastion.core import events as E
from core_harness import PX, Harness
from reference_matcher import Fill, Outcome, Reference, Spec

MARKET = "BTC-USDT"
ACCOUNTS = [1, 2, 3, 4]
POOR = 4  # little money: INSUFFICIENT_FUNDS and clipped market buys happen
STPS = [None, None, "expire_taker", "expire_maker", "expire_both", "none", "bogus"]

place = st.fixed_dictionaries({
    "op": st.just("place"),
    "account": st.sampled_from(ACCOUNTS * 4 + [9]),
    "side": st.sampled_from(["buy", "sell"]),
    "lots": st.sampled_from([1, 2, 3, 5, 8, 13, 30, 60]),
    "odd_qty": st.sampled_from([0] * 30 + [1, 999, -1_000]),
    "off": st.integers(-4, 4),
    "odd_price": st.sampled_from([0] * 40 + [-PX, 10**19]),
    "kind": st.sampled_from(["GTC", "GTC", "GTC", "IOC", "FOK", "FOK", "post", "market"]),
    "stp": st.sampled_from(STPS + ["expire_maker"] * 2),
    "cid": st.sampled_from(["", "", "", "x", "y"]),
})
cancel = st.fixed_dictionaries({"op": st.just("cancel"),
                                "account": st.sampled_from([0] * 16 + ACCOUNTS),  # 0: owner
                                "pick": st.integers(0, 40)})
amend = st.fixed_dictionaries({"op": st.just("amend"),
                               "account": st.sampled_from([0] * 16 + ACCOUNTS),  # 0: owner
                               "pick": st.integers(0, 40),
                               "dlots": st.sampled_from([None, -2, -1, 1, 3]),
                               "doff": st.sampled_from([None, -3, -1, 4, 9, 14]),
                               "odd": st.sampled_from([0] * 20 + [1])})
fees = st.fixed_dictionaries({"op": st.just("fees"), "taker": st.sampled_from([0, 500, 1_000]),
                              "maker": st.sampled_from([-1, -1, 0, 1])})
account_stp = st.fixed_dictionaries({"op": st.just("stp"), "account": st.sampled_from(ACCOUNTS),
                                     "mode": st.sampled_from(STPS[2:6])})
KINDS = {"place": place, "cancel": cancel, "amend": amend, "fees": fees, "stp": account_stp}
STREAM = st.lists(st.sampled_from(["place"] * 12 + ["cancel"] * 3 + ["amend"] * 3
                                  + ["fees"] * 2 + ["stp"])
                  .flatmap(KINDS.__getitem__), min_size=10, max_size=80)


def _setup() -> tuple[Harness, Reference]:
    h = Harness(accounts=[1, 2, 3])
    h.do(C.Deposit(account=POOR, asset="USDT", amount=10**9, reason="poor"))
    h.do(C.Deposit(account=POOR, asset="BTC", amount=20_000, reason="poor"))
    m = h.engine.markets[MARKET]
    spec = Spec(tick=m.tick_size, lot=m.lot_size, min_qty=m.min_qty, max_qty=m.max_qty,
                min_notional=m.min_notional, price_div=m.price_div, maker_ppm=m.maker_fee_ppm,
                taker_ppm=m.taker_fee_ppm, band_bps=m.market_band_bps)
    cash = {a: {"base": h.bal(a, "BTC")[0], "quote": h.bal(a, "USDT")[0]} for a in ACCOUNTS}
    return h, Reference(spec, cash)


def _engine_outcome(events: list[E.Event]) -> Outcome:
    out = Outcome()
    for e in events:
        if isinstance(e, E.Rejected):
            out.reject = e.code
        elif isinstance(e, E.OrderAccepted):
            out.order_id, out.qty = e.order_id, e.qty
        elif isinstance(e, E.Trade):
            out.fills.append(Fill(e.price, e.qty, e.maker_order, e.taker_order, e.maker_fee,
                                  e.taker_fee))
        elif isinstance(e, E.OrderAmended):
            out.order_id = out.order_id or e.order_id
            out.amended.append((e.order_id, e.price, e.qty, e.remaining, e.kept_priority))
        elif isinstance(e, E.OrderCanceled):
            if not out.order_id and not out.fills and e.reason == "CANCELED":
                out.order_id = e.order_id
            out.canceled.append((e.order_id, e.reason))
    return out


def _step(h: Harness, ref: Reference, stp_of: dict[int, str], c: dict[str, Any]) -> None:
    if c["op"] == "place":
        qty = c["lots"] * ref.spec.lot + c["odd_qty"]
        price = PX + (-c["off"] if c["side"] == "buy" else c["off"]) * 10 + c["odd_price"]
        kw: dict[str, Any] = {"tif": "GTC", "order_type": "limit", "post_only": False}
        if c["kind"] == "market":
            kw.update(order_type="market")
            price = 0
        elif c["kind"] == "post":
            kw.update(post_only=True)
        else:
            kw.update(tif=c["kind"])
        got = _engine_outcome(h.do(C.PlaceOrder(
            account=c["account"], market=MARKET, side=c["side"], qty=qty, price=price,
            stp=c["stp"], client_id=c["cid"], **kw)))
        want = ref.place(c["account"], c["side"], qty, price, stp=c["stp"],
                         client_id=c["cid"], account_stp=stp_of.get(c["account"],
                                                                    "expire_taker"), **kw)
    elif c["op"] == "cancel":
        ids = sorted((o.order_id, o.account) for o in ref.book) or [(1, 1)]
        oid, owner = ids[c["pick"] % len(ids)]
        account = c["account"] or owner
        got = _engine_outcome(h.do(C.CancelOrder(account=account, market=MARKET,
                                                 order_id=oid)))
        want = ref.cancel(account, oid)
    elif c["op"] == "amend":
        mine = sorted((o.order_id, o) for o in ref.book) or [(1, None)]
        oid, order = mine[c["pick"] % len(mine)]
        new_qty = None if c["dlots"] is None or order is None else max(
            ref.spec.lot, order.qty + c["dlots"] * ref.spec.lot) + c["odd"]
        new_price = None if c["doff"] is None or order is None else order.price + (
            c["doff"] if order.is_buy else -c["doff"]) * 10
        account = c["account"] or (order.account if order is not None else 1)
        got = _engine_outcome(h.do(C.AmendOrder(account=account, market=MARKET,
                                                order_id=oid, new_qty=new_qty,
                                                new_price=new_price)))
        want = ref.amend(account, oid, new_qty, new_price,
                         account_stp=stp_of.get(account, "expire_taker"))
    elif c["op"] == "fees":
        taker = c["taker"]
        maker = c["maker"] * taker // 2 if c["maker"] else 0
        m = h.engine.markets[MARKET]
        if (maker, taker) == (m.maker_fee_ppm, m.taker_fee_ppm):
            return
        assert not _engine_outcome(h.do(C.UpdateMarket(
            market=MARKET, maker_fee_ppm=maker, taker_fee_ppm=taker, reason="t"))).reject
        ref.spec.maker_ppm, ref.spec.taker_ppm = maker, taker
        return
    else:
        if stp_of.get(c["account"], "expire_taker") == c["mode"]:
            return
        h.do(C.SetAccountSTP(account=c["account"], stp=c["mode"]))
        stp_of[c["account"]] = c["mode"]
        return
    assert got == want, (c, got, want)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STREAM)
def test_engine_matches_the_reference(stream: list[dict[str, Any]]) -> None:
    h, ref = _setup()
    stp_of: dict[int, str] = {}
    for c in stream:
        _step(h, ref, stp_of, c)
        for a in ACCOUNTS:
            for asset, name in (("BTC", "base"), ("USDT", "quote")):
                avail, held = h.bal(a, asset)
                assert (avail + held, held) == (ref.cash[a][name], ref.held(a, name)), \
                    (a, asset)
    resting = {o.order_id: o.remaining for o in h.engine.orders.values()}
    assert resting == {o.order_id: o.remaining for o in ref.book}
    assert h.engine.check_invariants() == []


def test_fok_with_expire_maker_across_own_order_fills_from_the_others() -> None:
    """The case the issue names: own resting order at the best price, others behind it."""
    h, ref = _setup()
    stp_of: dict[int, str] = {}
    base = {"op": "place", "odd_qty": 0, "odd_price": 0, "cid": "", "stp": None}
    _step(h, ref, stp_of, {**base, "account": 1, "side": "sell", "lots": 3, "off": 1,
                           "kind": "GTC"})
    _step(h, ref, stp_of, {**base, "account": 2, "side": "sell", "lots": 5, "off": 2,
                           "kind": "GTC"})
    got = h.do(C.PlaceOrder(account=1, market=MARKET, side="buy", qty=5 * ref.spec.lot,
                            price=PX + 20, tif="FOK", stp="expire_maker"))
    assert not any(isinstance(e, E.Rejected) for e in got), got
    assert [e.reason for e in got if isinstance(e, E.OrderCanceled)] == ["SELF_TRADE"]
    assert sum(e.qty for e in got if isinstance(e, E.Trade)) == 5 * ref.spec.lot
