"""Garbage in: malformed or out-of-range commands are refused with codes, never raise."""

import msgspec
import pytest

from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.codec import decode_command, decode_command_json, encode_command
from core_harness import LOT, PX, Harness, rejected

BAD_ORDERS = [
    (dict(qty=0), X.INVALID_QUANTITY),
    (dict(qty=-LOT), X.INVALID_QUANTITY),
    (dict(qty=2**80), X.INVALID_QUANTITY),
    (dict(qty=LOT + 1), X.LOT_SIZE),
    (dict(qty=10**11 + LOT), X.MAX_QUANTITY),
    (dict(price=0), X.INVALID_PRICE),
    (dict(price=-5), X.INVALID_PRICE),
    (dict(price=2**70), X.INVALID_PRICE),
    (dict(price=1), X.MIN_NOTIONAL),
    (dict(market="NOPE"), X.UNKNOWN_MARKET),
    (dict(account=999), X.UNKNOWN_ACCOUNT),
    (dict(side="up"), X.INVALID_ARGUMENT),
    (dict(tif="GTD"), X.INVALID_ARGUMENT),
    (dict(order_type="stop"), X.INVALID_ARGUMENT),
    (dict(client_id="x" * 65), X.INVALID_ARGUMENT),
    (dict(stp="maybe"), X.INVALID_ARGUMENT),
    (dict(post_only=True, tif="IOC"), X.INVALID_ARGUMENT),
    (dict(order_type="market", price=PX), X.INVALID_ARGUMENT),
    (dict(price="5000000"), X.INVALID_PRICE),
    (dict(qty=1.5), X.INVALID_QUANTITY),
]


@pytest.mark.parametrize("patch,code", BAD_ORDERS)
def test_bad_orders_refused_with_code(patch, code):
    h = Harness()
    before = h.engine.export_state()
    fields = dict(account=1, market="BTC-USDT", side="buy", price=PX, qty=LOT)
    fields.update(patch)
    ev = h.do(C.PlaceOrder(**fields))  # type: ignore[arg-type]
    assert rejected(ev) == code
    assert isinstance(ev[0], E.Rejected) and ev[0].message
    after = h.engine.export_state()
    assert (after.seq, after.ts) != (before.seq, before.ts)  # journaled, so seq/ts advance...
    after.seq, after.ts = before.seq, before.ts
    assert after == before  # ...and nothing else changed
    assert h.engine.check_invariants() == []


@pytest.mark.parametrize("cmd,code", [
    (C.Deposit(account=1, asset="DOGE", amount=5), X.UNKNOWN_ASSET),
    (C.Deposit(account=1, asset="USDT", amount=0), X.INVALID_AMOUNT),
    (C.Deposit(account=-3, asset="USDT", amount=5), X.INVALID_ARGUMENT),
    (C.Deposit(account=1, asset="USDT", amount=2**63), X.INVALID_AMOUNT),
    (C.Withdraw(account=1, asset="USDT", amount=10**30), X.INVALID_AMOUNT),
    (C.Withdraw(account=1, asset="USDT", amount=2**61), X.INSUFFICIENT_FUNDS),
    (C.AdjustBalance(account=1, asset="USDT", delta=5, reason=""), X.INVALID_ARGUMENT),
    (C.AdjustBalance(account=1, asset="USDT", delta=-2**61, reason="oops"), X.INSUFFICIENT_FUNDS),
    (C.CreateAsset(asset="US DT", decimals=2), X.INVALID_ARGUMENT),
    (C.CreateAsset(asset="USDT", decimals=2), X.ASSET_EXISTS),
    (C.CreateAsset(asset="XYZ", decimals=99), X.INVALID_ARGUMENT),
    (C.CreateMarket(market="BTC-USDT", base="BTC", quote="USDT", price_decimals=2, tick_size=1,
                    lot_size=1000, min_qty=1000, max_qty=10**9), X.MARKET_EXISTS),
    (C.CreateMarket(market="X-Y", base="BTC", quote="USDT", price_decimals=2, tick_size=1,
                    lot_size=1, min_qty=1, max_qty=10**9), X.INVALID_MARKET_SPEC),
    (C.CreateMarket(market="X-Y", base="BTC", quote="NOPE", price_decimals=2, tick_size=1,
                    lot_size=1000, min_qty=1000, max_qty=10**9), X.UNKNOWN_ASSET),
    (C.SetReferencePrice(market="BTC-USDT", price=0), X.INVALID_PRICE),
    (C.CancelOrder(account=1, market="BTC-USDT"), X.INVALID_ARGUMENT),
    (C.CancelOrder(account=1, market="BTC-USDT", order_id="7"), X.INVALID_ARGUMENT),  # type: ignore[arg-type]
    (C.CancelAll(), X.INVALID_ARGUMENT),
    (C.SetAccountSTP(account=1, stp="sometimes"), X.INVALID_ARGUMENT),  # type: ignore[arg-type]
    (C.AmendOrder(account=1, market="BTC-USDT", order_id=12345, new_qty=LOT), X.UNKNOWN_ORDER),
])
def test_bad_operator_and_account_commands(cmd, code):
    h = Harness()
    assert rejected(h.do(cmd)) == code
    assert h.engine.check_invariants() == []


def test_stale_sequence_refused_without_state_change():
    h = Harness()
    before = h.engine.state_hash()
    cmd = C.Deposit(account=1, asset="USDT", amount=5)
    cmd.seq, cmd.ts = h.engine.seq, h.engine.ts
    assert rejected(h.engine.apply(cmd)) == X.SEQUENCE
    cmd.seq, cmd.ts = h.engine.seq + 1, h.engine.ts - 1
    assert rejected(h.engine.apply(cmd)) == X.SEQUENCE
    assert h.engine.state_hash() == before


def test_codec_roundtrip_and_malformed_bytes():
    cmd = C.PlaceOrder(account=1, market="BTC-USDT", side="buy", price=PX, qty=LOT, seq=3, ts=9)
    assert decode_command(encode_command(cmd)) == cmd
    for junk in (b"", b"\xff\xfe", b"\x81\xa4type\xa4Nope"):
        with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
            decode_command(junk)
    with pytest.raises(msgspec.ValidationError):
        decode_command_json(b'{"type":"PlaceOrder","account":1,"market":"BTC-USDT","side":"up","qty":1}')


def test_total_supply_is_bounded_so_state_always_encodes():
    h = Harness()
    before = h.engine.export_state()
    ev = h.do(C.Deposit(account=77, asset="USDT", amount=X.MAX_INT))
    assert rejected(ev) == X.INVALID_AMOUNT
    assert 77 not in h.engine.accounts
    assert h.engine.export_state().accounts == before.accounts
    assert h.engine.state_hash()  # still encodes
