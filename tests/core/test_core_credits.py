"""``Credit``: journaled compensation, idempotent per (incident, account, asset) across
snapshots and replays, refused cleanly on bad input, funds conserved."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core import commands as C
from bastion.core import events as E
from bastion.core.codec import decode_state, encode_state
from bastion.core.engine import Engine
from bastion.demo import demo_setup, stamp


def venue() -> Engine:
    eng = Engine()
    for cmd in stamp(demo_setup()):
        eng.apply(cmd)
    return eng


def do(eng: Engine, cmd: C.Command) -> list[E.Event]:
    cmd.seq, cmd.ts = eng.seq + 1, eng.ts + 1
    return eng.apply(cmd)


def usdt(eng: Engine, account: int) -> int:
    return eng.accounts[account].available.get("USDT", 0)


def test_credit_once_per_incident_account_asset() -> None:
    eng = venue()
    before = usdt(eng, 1)
    first = do(eng, C.Credit(account=1, asset="USDT", amount=700, incident="inc-1",
                             reason="funding reset"))
    assert [type(e).__name__ for e in first] == ["BalanceChanged", "Credited"]
    assert first[0].kind == "compensation" and "inc-1" in first[0].reason
    again = do(eng, C.Credit(account=1, asset="USDT", amount=700, incident="inc-1",
                             reason="funding reset"))
    assert [type(e).__name__ for e in again] == ["Credited"] and again[0].duplicate
    assert usdt(eng, 1) == before + 700
    # another incident, account or asset is another credit
    do(eng, C.Credit(account=1, asset="USDT", amount=5, incident="inc-2", reason="x"))
    do(eng, C.Credit(account=2, asset="USDT", amount=5, incident="inc-1", reason="x"))
    do(eng, C.Credit(account=1, asset="BTC", amount=5, incident="inc-1", reason="x"))
    assert usdt(eng, 1) == before + 705
    assert eng.check_invariants() == []


def test_the_key_survives_a_snapshot() -> None:
    eng = venue()
    do(eng, C.Credit(account=1, asset="USDT", amount=9, incident="inc", reason="r"))
    restored = Engine.from_state(decode_state(encode_state(eng.export_state())))
    assert restored.state_hash() == eng.state_hash()
    again = do(restored, C.Credit(account=1, asset="USDT", amount=9, incident="inc", reason="r"))
    assert again[0].duplicate and usdt(restored, 1) == usdt(eng, 1)


def test_no_credit_no_change_to_the_state_encoding() -> None:
    """A venue that never credited encodes exactly as before the field existed."""
    assert b"credited" not in encode_state(venue().export_state())


def test_bad_credits_are_refused_and_change_nothing() -> None:
    eng = venue()
    for bad in (C.Credit(account=1, asset="USDT", amount=0, incident="i", reason="r"),
                C.Credit(account=1, asset="USDT", amount=-5, incident="i", reason="r"),
                C.Credit(account=1, asset="USDT", amount=2**63, incident="i", reason="r"),
                C.Credit(account=1, asset="USDT", amount=5, incident="", reason="r"),
                C.Credit(account=1, asset="USDT", amount=5, incident="i" * 65, reason="r"),
                C.Credit(account=1, asset="USDT", amount=5, incident="i", reason=" "),
                C.Credit(account=1, asset="NOPE", amount=5, incident="i", reason="r"),
                C.Credit(account=77, asset="USDT", amount=5, incident="i", reason="r")):
        events = do(eng, bad)
        assert len(events) == 1 and isinstance(events[0], E.Rejected), events
    assert eng.export_state().accounts == venue().export_state().accounts
    assert eng.export_state().net_deposits == venue().export_state().net_deposits
    assert eng.check_invariants() == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from([1, 2]),
                          st.integers(1, 10**9)), max_size=20))
def test_repeats_never_credit_twice(credits: list[tuple[str, int, int]]) -> None:
    eng = venue()
    start = {a: usdt(eng, a) for a in (1, 2)}
    first: dict[tuple[str, int], int] = {}
    for incident, account, amount in credits:
        do(eng, C.Credit(account=account, asset="USDT", amount=amount, incident=incident,
                         reason="r"))
        first.setdefault((incident, account), amount)
    for a in (1, 2):
        paid = sum(v for (_, acct), v in first.items() if acct == a)
        assert usdt(eng, a) == start[a] + paid
    assert eng.check_invariants() == []
