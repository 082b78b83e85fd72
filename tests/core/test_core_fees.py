"""One fee rule for every market kind: a maker's fee never exceeds the rate in force when it
was placed (a rebate at placement caps later fees at zero)."""

import pytest

from bastion.core import commands as C
from bastion.core import events as E
from bastion.core.rules import maker_rate
from core_harness import Harness, only
from perp_harness import PERP, PerpHarness


@pytest.mark.parametrize("kind", ["spot", "perp"])
def test_maker_placed_under_a_rebate_never_pays_a_later_fee(kind: str) -> None:
    if kind == "perp":
        h: Harness = PerpHarness(maker_fee_ppm=-100, taker_fee_ppm=500)
        market = PERP
        lot = 100_000
        px = 1_000_000
        place = h.order  # type: ignore[attr-defined]
    else:
        h = Harness()
        market = "BTC-USDT"
        h.do(C.UpdateMarket(market=market, maker_fee_ppm=-100, reason="rebate"))
        lot = 1_000
        px = 5_000_000
        place = h.place
    assert not only(place(1, "sell", 10, px), E.Rejected)
    assert not only(h.do(C.UpdateMarket(market=market, maker_fee_ppm=300, reason="up")),
                    E.Rejected)
    trade = only(place(2, "buy", 10, px), E.Trade)[0]
    assert trade.qty == 10 * lot and trade.maker_account == 1
    assert trade.maker_fee == 0  # placed under a rebate: its hold covered no fee
    assert trade.taker_fee > 0
    assert h.engine.check_invariants() == []


def test_maker_rate_rule() -> None:
    assert maker_rate(300, -100) == 0
    assert maker_rate(300, 200) == 200
    assert maker_rate(100, 200) == 100
    assert maker_rate(-300, -100) == -300  # a deeper rebate later applies in full
    assert maker_rate(-50, 0) == -50
