"""Garbage into perp commands: one Rejected with a stable code, nothing changed, never raises."""

import msgspec
import pytest

from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.codec import (
    decode_command,
    decode_command_json,
    decode_event,
    encode_command,
    encode_event,
)
from core_harness import Harness
from perp_harness import LOT, PERP, PX, USDT, PerpHarness, code


def src(price: object = PX, ts: object = None, name: object = "a") -> C.SourcePrice:
    return C.SourcePrice(source=name, price=price, ts=ts if ts is not None else 0)  # type: ignore[arg-type]


BAD = [
    (C.UpdateIndex(market=PERP, sources=[]), X.INVALID_ARGUMENT),
    (C.UpdateIndex(market=PERP, sources="x"), X.INVALID_ARGUMENT),  # type: ignore[arg-type]
    (C.UpdateIndex(market=PERP, sources=[src(-1), src(PX, name="b")]), X.INVALID_PRICE),
    (C.UpdateIndex(market=PERP, sources=[src("1"), src(PX, name="b")]), X.INVALID_PRICE),
    (C.UpdateIndex(market=PERP, sources=[src(name=""), src(name="b")]), X.INVALID_ARGUMENT),
    (C.UpdateIndex(market=PERP, sources=[src(ts=10**18), src(name="b")]), X.ORACLE_STALE),
    (C.UpdateIndex(market="NOPE", sources=[src()]), X.UNKNOWN_MARKET),
    (C.FundingTick(market=PERP, index="0"), X.INVALID_ARGUMENT),  # type: ignore[arg-type]
    (C.FundingTick(market=PERP, index=2**70), X.INVALID_ARGUMENT),
    (C.FundingTick(market="BTC-USDT"), X.NOT_PERP),
    (C.AddMargin(account=1, asset="USDT", amount=0), X.INVALID_AMOUNT),
    (C.AddMargin(account=1, asset="USDT", amount=-5), X.INVALID_AMOUNT),
    (C.AddMargin(account=99, asset="USDT", amount=5), X.UNKNOWN_ACCOUNT),
    (C.AddMargin(account=1, asset="DOGE", amount=5), X.UNKNOWN_ASSET),
    (C.RemoveMargin(account=1, asset="USDT", amount=10**9 * USDT), X.INSUFFICIENT_MARGIN),
    (C.RemoveMargin(account=1, asset="USDT", amount=1.5), X.INVALID_AMOUNT),  # type: ignore[arg-type]
    (C.SetLeverage(account=1, market=PERP, leverage=0), X.INVALID_LEVERAGE),
    (C.SetLeverage(account=1, market=PERP, leverage="5"), X.INVALID_LEVERAGE),  # type: ignore[arg-type]
    (C.SetLeverage(account=1, market="BTC-USDT", leverage=5), X.NOT_PERP),
    (C.FundInsurance(asset="USDT", amount=0, reason="x"), X.INVALID_AMOUNT),
    (C.ResetOracle(market=PERP, reason=""), X.INVALID_ARGUMENT),
    (C.PlaceTrigger(account=1, market=PERP, side="buy", qty=LOT, trigger_price=PX * 2,
                    order_type="stop"), X.INVALID_ARGUMENT),  # type: ignore[arg-type]
    (C.PlaceTrigger(account=1, market=PERP, side="up", qty=LOT, trigger_price=PX * 2,  # type: ignore[arg-type]
                    order_type="stop_market"), X.INVALID_ARGUMENT),
    (C.PlaceTrigger(account=1, market=PERP, side="buy", qty=LOT + 1, trigger_price=PX * 2,
                    order_type="stop_market"), X.LOT_SIZE),
    (C.PlaceTrigger(account=1, market=PERP, side="buy", qty=LOT, trigger_price=0,
                    order_type="stop_market"), X.INVALID_PRICE),
    (C.PlaceTrigger(account=1, market=PERP, side="buy", qty=LOT, trigger_price=PX * 2,
                    order_type="stop_limit", price=0), X.INVALID_PRICE),
    (C.PlaceTrigger(account=1, market=PERP, side="buy", qty=LOT, trigger_price=PX * 2,
                    order_type="stop_market", reduce_only=1), X.INVALID_ARGUMENT),  # type: ignore[arg-type]
    (C.CancelTrigger(account=1, market=PERP, trigger_id="1"), X.INVALID_ARGUMENT),  # type: ignore[arg-type]
    (C.CancelTrigger(account=1, market=PERP, trigger_id=77), X.UNKNOWN_TRIGGER),
    (C.PlaceOrder(account=1, market=PERP, side="buy", qty=LOT, price=PX, reduce_only="yes"),  # type: ignore[arg-type]
     X.INVALID_ARGUMENT),
    (C.PlaceOrder(account=1, market=PERP, side="buy", qty=LOT, price=PX + 1_000_000),
     X.PRICE_BAND),
    (C.PlaceOrder(account=1, market=PERP, side="buy", qty=LOT, order_type="market"),
     X.NO_LIQUIDITY),
    (C.CreatePerpMarket(market="Y-PERP", base="BTC", settle="USDT", price_decimals=2,
                        tick_size=1, contract_size=LOT, min_qty=LOT, max_qty=LOT,
                        tiers=[C.MarginTier(max_notional=-1, max_leverage=5,
                                            maintenance_ppm=1)]), X.INVALID_MARKET_SPEC),
    (C.CreatePerpMarket(market="Y-PERP", base="BTC", settle="USDT", price_decimals=2,
                        tick_size=1, contract_size=LOT, min_qty=LOT, max_qty=LOT,
                        guards="no"), X.INVALID_MARKET_SPEC),  # type: ignore[arg-type]
    (C.CreatePerpMarket(market="Y-PERP", base="BTC", settle="DOGE", price_decimals=2,
                        tick_size=1, contract_size=LOT, min_qty=LOT, max_qty=LOT),
     X.UNKNOWN_ASSET),
]


@pytest.mark.parametrize("cmd,want", BAD)
def test_garbage_refused_with_code_and_changes_nothing(cmd, want):
    h = PerpHarness()
    before = h.engine.export_state()
    assert code(h.do(cmd)) == want
    after = h.engine.export_state()
    after.seq, after.ts = before.seq, before.ts
    assert after == before
    h.ok()


def test_perp_commands_round_trip_through_both_codecs():
    cmds = [C.UpdateIndex(market=PERP, sources=[src(), src(name="b")], seq=3, ts=4),
            C.FundingTick(market=PERP, index=-5), C.AddMargin(account=1, asset="USDT", amount=1),
            C.PlaceTrigger(account=1, market=PERP, side="sell", qty=LOT, trigger_price=1,
                           order_type="take_profit_limit", price=2),
            C.PlaceOrder(account=1, market=PERP, side="buy", qty=LOT, price=PX,
                         reduce_only=True)]
    for cmd in cmds:
        assert decode_command(encode_command(cmd)) == cmd
        assert decode_command_json(msgspec.json.encode(cmd)) == cmd


def test_spot_state_encoding_is_unchanged_without_perps():
    """No perp market, no perp key: spot snapshots and hashes stay what they were."""
    h = Harness()
    assert h.engine.export_state().perp is None
    assert b"perp" not in msgspec.msgpack.encode(h.engine.export_state())


def test_events_of_a_perp_session_decode():
    h = PerpHarness(insurance=100 * USDT)
    h.open(1, 2, 1_000)
    events = h.index(900_000 + 40_000)
    assert any(isinstance(e, E.Liquidated) for e in events)
    for e in events:
        assert decode_event(encode_event(e)) == e
