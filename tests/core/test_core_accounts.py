"""Accounts are found by number two ways (``Venue.find_account``): by position in the dense
list below ``DENSE_ACCOUNTS``, through the map above it. Both must trade alike, live and
restored, and the audit must catch a list entry that is not the account's record."""

from bastion.core import commands as C
from bastion.core.engine import Engine
from bastion.core.records import Account
from bastion.core.venue import DENSE_ACCOUNTS
from bastion.demo import BTC_USDT, demo_setup
from core_harness import LOT, PX, Harness

LOW, HIGH = 7, DENSE_ACCOUNTS + 7


def test_accounts_below_and_above_the_dense_range_trade_alike_live_and_restored() -> None:
    h = Harness(accounts=[LOW, HIGH])
    engine = h.engine
    assert engine.account_list[LOW] is engine.accounts[LOW]
    assert len(engine.account_list) == LOW + 1  # made only as far as the largest number used
    h.place(LOW, "sell", 3)
    trades = [e for e in h.place(HIGH, "buy", 2) if type(e).__name__ == "Trade"]
    assert [(t.maker_account, t.taker_account, t.qty) for t in trades] == [(LOW, HIGH, 2 * LOT)]
    assert engine.check_invariants() == []
    restored = Engine.from_state(engine.export_state())
    assert restored.account_list[LOW] is restored.accounts[LOW]
    assert restored.find_account(HIGH) is restored.accounts[HIGH]
    assert restored.state_hash() == engine.state_hash()
    missing = C.PlaceOrder(account=LOW + 1, market=BTC_USDT, side="buy", price=PX, qty=LOT)
    missing.seq, missing.ts = restored.seq + 1, restored.ts + 1
    assert [type(e).__name__ for e in restored.apply(missing)] == ["Rejected"]
    assert restored.find_account(-1) is None and restored.find_account("7") is None


def test_the_audit_catches_a_dense_entry_that_is_not_the_record() -> None:
    engine = Engine()
    for cmd in demo_setup([LOW]):
        cmd.seq, cmd.ts = engine.seq + 1, engine.ts + 1
        engine.apply(cmd)
    assert engine.check_invariants() == []
    engine.account_list[LOW] = Account(LOW, {}, {})
    assert any("dense" in p for p in engine.check_invariants())
