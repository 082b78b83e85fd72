"""The wallet in the core: withdrawal lifecycle and risk rules, deposits credited once, held
funds in the conservation audit, and (hypothesis) random command streams that never confirm a
withdrawal twice, never lose or create money, and replay to the same state."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.engine import Engine
from core_harness import Harness, only, rejected

ADDR = "0x" + "ab" * 20
DAY = 86_400_000


def _h(**rules: int) -> Harness:
    h = Harness()
    base = dict(min_amount=100, fee=7, confirmations=3)
    base.update(rules)
    assert only(h.do(C.SetWithdrawalRules(asset="ETH", **base)), E.WithdrawalRulesSet)
    return h


def _request(h: Harness, amount: int = 1_000, account: int = 1, **kw: object) -> E.Event:
    events = h.do(C.RequestWithdrawal(account=account, asset="ETH", amount=amount,
                                      address=kw.pop("address", ADDR), **kw))  # type: ignore[arg-type]
    assert not only(events, E.Rejected), events
    return only(events, E.WithdrawalUpdated)[0]


def test_lifecycle_holds_then_pays_and_refuses_a_second_confirmation() -> None:
    h = _h()
    avail0 = h.bal(1, "ETH")[0]
    supply0 = h.engine.net_deposits["ETH"]
    ev = _request(h)
    assert ev.state == "approved" and h.bal(1, "ETH")[0] == avail0 - 1_007
    assert h.engine.wallet.held_of(1, "ETH") == 1_007 and h.engine.check_invariants() == []
    assert only(h.do(C.SubmitWithdrawal(wid=ev.wid, key="k")), E.WithdrawalUpdated)
    assert rejected(h.do(C.CancelWithdrawal(account=1, wid=ev.wid))) == X.WITHDRAWAL_STATE
    events = h.do(C.ConfirmWithdrawal(wid=ev.wid, txid="tx1"))
    assert only(events, E.WithdrawalUpdated)[0].state == "confirmed"
    assert only(events, E.BalanceChanged)[0].delta == -1_000
    before = h.engine.state_hash()
    assert rejected(h.do(C.ConfirmWithdrawal(wid=ev.wid, txid="tx1"))) == X.WITHDRAWAL_STATE
    assert rejected(h.do(C.FailWithdrawal(wid=ev.wid, reason="x"))) == X.WITHDRAWAL_STATE
    assert h.engine.state_hash() != before  # seq moved, nothing else
    assert h.bal(1, "ETH")[0] == avail0 - 1_007 and h.engine.wallet.held_of(1, "ETH") == 0
    assert h.engine.net_deposits["ETH"] == supply0 - 1_000 and h.engine.fees["ETH"] == 7
    assert h.engine.check_invariants() == []


def test_failed_cancelled_rejected_release_everything() -> None:
    h = _h(manual_above=5_000)
    avail0 = h.bal(1, "ETH")[0]
    a = _request(h)
    h.do(C.SubmitWithdrawal(wid=a.wid, key="ka"))
    assert only(h.do(C.FailWithdrawal(wid=a.wid, reason="chain said no")),
                E.WithdrawalUpdated)[0].state == "failed"
    b = _request(h)
    assert only(h.do(C.CancelWithdrawal(account=1, wid=b.wid)), E.WithdrawalUpdated)
    assert rejected(h.do(C.CancelWithdrawal(account=2, wid=b.wid))) == X.UNKNOWN_WITHDRAWAL
    c = _request(h, amount=6_000)
    assert c.state == "risk_review"
    assert rejected(h.do(C.SubmitWithdrawal(wid=c.wid, key="kc"))) == X.WITHDRAWAL_STATE
    h.do(C.ReviewWithdrawal(wid=c.wid, approve=False, operator="ops", reason="unusual"))
    d = _request(h, amount=6_000)
    ok = only(h.do(C.ReviewWithdrawal(wid=d.wid, approve=True, operator="ops")),
              E.WithdrawalUpdated)[0]
    assert ok.state == "approved"
    h.do(C.CancelWithdrawal(account=1, wid=d.wid))
    assert h.bal(1, "ETH")[0] == avail0 and h.engine.wallet.held == {}
    assert h.engine.check_invariants() == []


def test_refusals_hold_nothing() -> None:
    h = _h(daily_limit=3_000)
    before = (h.bal(1, "ETH"), dict(h.engine.wallet.held))
    cases = [
        (dict(amount=99), X.BELOW_MINIMUM),
        (dict(amount=0), X.INVALID_AMOUNT),
        (dict(amount=True), X.INVALID_AMOUNT),
        (dict(amount=10**30), X.INVALID_AMOUNT),
        (dict(amount=10**12), X.INSUFFICIENT_FUNDS),
        (dict(address=""), X.INVALID_ADDRESS),
        (dict(address="é" * 5), X.INVALID_ADDRESS),
        (dict(address="a" * 91), X.INVALID_ADDRESS),
        (dict(asset="DOGE"), X.UNKNOWN_ASSET),
        (dict(asset="BTC"), X.WITHDRAWALS_DISABLED),
        (dict(account=999), X.UNKNOWN_ACCOUNT),
        (dict(amount=3_001), X.DAILY_LIMIT),
    ]
    for change, code in cases:
        args: dict[str, object] = dict(account=1, asset="ETH", amount=1_000, address=ADDR)
        args.update(change)
        assert rejected(h.do(C.RequestWithdrawal(**args))) == code, change  # type: ignore[arg-type]
    assert (h.bal(1, "ETH"), dict(h.engine.wallet.held)) == before
    _request(h, amount=2_000, client_id="c1")
    ev = h.do(C.RequestWithdrawal(account=1, asset="ETH", amount=2_000, address=ADDR,
                                  client_id="c1"))
    assert rejected(ev) == X.DUPLICATE_CLIENT_ID
    assert rejected(h.do(C.RequestWithdrawal(account=1, asset="ETH", amount=1_001,
                                             address=ADDR))) == X.DAILY_LIMIT
    h.do(C.RequestWithdrawal(account=1, asset="ETH", amount=500, address=ADDR), dt=DAY)
    assert h.engine.check_invariants() == []


def test_pause_and_new_address_delay() -> None:
    h = _h(address_delay_ms=60_000)
    assert only(h.do(C.PauseWithdrawals(asset="ETH", paused=True, reason="custody outage",
                                        by="auto")), E.WithdrawalsPaused)
    assert rejected(h.do(C.RequestWithdrawal(account=1, asset="ETH", amount=500,
                                             address=ADDR))) == X.WITHDRAWALS_PAUSED
    assert rejected(h.do(C.PauseWithdrawals(asset="ETH", paused=True, reason="again"))) \
        == X.NO_CHANGE
    h.do(C.PauseWithdrawals(asset="ETH", paused=False, reason="operator resumed"))
    ev = _request(h, amount=500)
    assert ev.state == "requested"  # the address is new: usable in 60 s
    assert rejected(h.do(C.ReleaseWithdrawal(wid=ev.wid))) == X.WITHDRAWAL_STATE
    assert only(h.do(C.ReleaseWithdrawal(wid=ev.wid), dt=60_000),
                E.WithdrawalUpdated)[0].state == "approved"
    assert _request(h, amount=500).state == "approved"  # known address now


def test_deposit_confirming_then_credited_once() -> None:
    h = _h()
    assert rejected(h.do(C.ObserveDeposit(txid="t", asset="ETH", address="0xdep", amount=5,
                                          confirmations=9))) == X.UNKNOWN_ADDRESS
    h.do(C.AssignDepositAddress(account=3, asset="ETH", address="0xdep"))
    assert rejected(h.do(C.AssignDepositAddress(account=2, asset="ETH", address="0xdep"))) \
        == X.INVALID_ARGUMENT
    avail0 = h.bal(3, "ETH")[0]
    ev = only(h.do(C.ObserveDeposit(txid="t", asset="ETH", address="0xdep", amount=5,
                                    confirmations=1)), E.DepositUpdated)[0]
    assert (ev.state, ev.confirmations, ev.required) == ("confirming", 1, 3)
    assert rejected(h.do(C.ObserveDeposit(txid="t", asset="ETH", address="0xdep", amount=5,
                                          confirmations=1))) == X.NO_CHANGE
    assert rejected(h.do(C.ObserveDeposit(txid="t", asset="ETH", address="0xdep", amount=6,
                                          confirmations=2))) == X.DUPLICATE_TXID
    done = h.do(C.ObserveDeposit(txid="t", asset="ETH", address="0xdep", amount=5,
                                 confirmations=4))
    assert only(done, E.DepositUpdated)[0].state == "credited"
    assert h.bal(3, "ETH")[0] == avail0 + 5
    for confs in (4, 5, 100):
        assert rejected(h.do(C.ObserveDeposit(txid="t", asset="ETH", address="0xdep",
                                              amount=5, confirmations=confs))) == X.NO_CHANGE
    assert h.bal(3, "ETH")[0] == avail0 + 5 and h.engine.check_invariants() == []


_ops = st.lists(st.tuples(
    st.sampled_from(["request", "submit", "confirm", "fail", "cancel", "review", "pause",
                     "deposit"]),
    st.integers(1, 8), st.integers(1, 3), st.integers(0, 5_000)), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(_ops)
def test_random_streams_keep_every_invariant_and_replay(ops: list[tuple[str, int, int, int]]
                                                       ) -> None:
    h = _h(manual_above=4_000)
    h.do(C.AssignDepositAddress(account=2, asset="ETH", address="0xdep"))
    confirmed: dict[int, int] = {}
    for op, wid, account, n in ops:
        if op == "request":
            cmd: C.Command = C.RequestWithdrawal(account=account, asset="ETH", amount=n,
                                                 address=ADDR)
        elif op == "submit":
            cmd = C.SubmitWithdrawal(wid=wid, key=f"k{wid}")
        elif op == "confirm":
            cmd = C.ConfirmWithdrawal(wid=wid, txid=f"tx{wid}-{n % 2}")
        elif op == "fail":
            cmd = C.FailWithdrawal(wid=wid, reason="chain")
        elif op == "cancel":
            cmd = C.CancelWithdrawal(account=account, wid=wid)
        elif op == "review":
            cmd = C.ReviewWithdrawal(wid=wid, approve=n % 2 == 0, operator="ops")
        elif op == "pause":
            cmd = C.PauseWithdrawals(asset="ETH", paused=n % 2 == 0, reason="drill")
        else:
            cmd = C.ObserveDeposit(txid=f"d{wid}", asset="ETH", address="0xdep",
                                   amount=wid * 10, confirmations=n % 5)
        for ev in h.do(cmd):
            if isinstance(ev, E.WithdrawalUpdated) and ev.state == "confirmed":
                confirmed[ev.wid] = confirmed.get(ev.wid, 0) + 1
        assert h.engine.check_invariants() == [], (op, wid, account, n)
    assert all(count == 1 for count in confirmed.values())
    replay = Engine()
    for cmd in h.log:
        replay.apply(cmd)
    assert replay.state_hash() == h.engine.state_hash()
    restored = Engine.from_state(h.engine.export_state())
    assert restored.state_hash() == h.engine.state_hash()
    assert restored.check_invariants() == []


def test_negative_insurance_fund_pauses_that_asset_until_covered() -> None:
    h = Harness()
    h.do(C.SetWithdrawalRules(asset="USDT", min_amount=1))
    h.do(C.SetWithdrawalRules(asset="ETH", min_amount=1))
    fund = h.engine.perp.insurance("USDT")
    fund.collateral = -5  # what a liquidation the fund could not pay leaves behind
    events = h.do(C.RequestWithdrawal(account=1, asset="USDT", amount=10, address=ADDR))
    assert rejected(events) == X.WITHDRAWALS_PAUSED and "insurance fund" in events[0].message
    assert h.engine.wallet.paused_reason("ETH") == ""
    assert only(h.do(C.RequestWithdrawal(account=1, asset="ETH", amount=10, address=ADDR)),
                E.WithdrawalUpdated)
    fund.collateral = 0
    assert only(h.do(C.RequestWithdrawal(account=1, asset="USDT", amount=10, address=ADDR)),
                E.WithdrawalUpdated)
