"""Perp test helpers: a small perpetual market, feeders and shortcuts around core_harness."""

from __future__ import annotations

from typing import Any

from bastion.core import commands as C
from bastion.core import events as E
from bastion.core.engine import Engine
from core_harness import Harness

PERP = "T-PERP"
PX = 1_000_000          # 10,000.00 USDT per BTC
LOT = 100_000           # 0.001 BTC
DIV = 100               # price_div: 10 ** (2 + 8 - 8)
USDT = 10**8            # one USDT in smallest units


def perp_spec(**kw: Any) -> C.CreatePerpMarket:
    """A test perpetual: 10x max leverage, 5% maintenance, fees off, 1 h funding, breaker off
    unless asked for; every knob can be overridden."""
    spec: dict[str, Any] = dict(
        market=PERP, base="BTC", settle="USDT", price_decimals=2, tick_size=1,
        contract_size=LOT, min_qty=LOT, max_qty=10**12, max_leverage=10,
        maintenance_ppm=50_000, default_leverage=10, funding_interval_ms=3_600_000,
        max_funding_e9=10_000_000, min_sources=2, source_max_age_ms=5_000,
        index_max_age_ms=60_000, max_move_bps=1_000, move_window_ms=60_000,
        liq_breaker_ppm=0, liq_fee_ppm=0, price_band_bps=2_000)
    spec.update(kw)
    return C.CreatePerpMarket(**spec)


class PerpHarness(Harness):
    def __init__(self, accounts: list[int] | None = None, margin: int = 1_000 * USDT,
                 insurance: int = 0, engine: Engine | None = None, **spec: Any) -> None:
        accounts = accounts or [1, 2, 3, 4]
        super().__init__(engine=engine, accounts=accounts)
        self.expect_ok(self.do(perp_spec(**spec)))
        if insurance:
            self.expect_ok(self.do(C.FundInsurance(asset="USDT", amount=insurance,
                                                   reason="test")))
        for a in accounts:
            if margin:
                self.expect_ok(self.do(C.AddMargin(account=a, asset="USDT", amount=margin)))
        self.index(PX)

    @staticmethod
    def expect_ok(events: list[E.Event]) -> list[E.Event]:
        assert not any(isinstance(e, E.Rejected) for e in events), events
        return events

    def index(self, price: int, market: str = PERP, dt: int = 1_000,
              sources: list[tuple[str, int, int]] | None = None) -> list[E.Event]:
        """Feeder update: three sources at ``price``, stamped now, ``dt`` ms after the last."""
        ts = self.ts + dt
        srcs = sources or [("a", price, 0), ("b", price, 0), ("c", price, 0)]
        return self.do(C.UpdateIndex(market=market, sources=[
            C.SourcePrice(source=s, price=p, ts=ts - age) for s, p, age in srcs]), dt)

    def order(self, account: int, side: str, lots: int, price: int = PX, **kw: Any
              ) -> list[E.Event]:
        return self.do(C.PlaceOrder(account=account, market=PERP, side=side,  # type: ignore[arg-type]
                                    qty=lots * LOT, price=price, **kw))

    def open(self, long: int, short: int, lots: int, price: int = PX) -> None:
        """Give ``long`` and ``short`` opposite positions of ``lots`` at ``price``."""
        self.expect_ok(self.order(short, "sell", lots, price))
        events = self.expect_ok(self.order(long, "buy", lots, price))
        assert any(isinstance(e, E.Trade) for e in events), events

    def pos(self, account: int, market: str = PERP) -> int:
        p = self.engine.perp.positions.get(market, {}).get(account)
        return p.size if p else 0

    def coll(self, account: int) -> int:
        """Collateral with funding settled (positions settle lazily; equity counts it)."""
        return self.engine.perp.risk(self.engine.perp.margins[(account, "USDT")]).wallet

    def equity(self, account: int) -> int:
        return self.engine.perp.risk(self.engine.perp.margins[(account, "USDT")]).equity

    def ok(self) -> None:
        assert self.engine.check_invariants() == []


def kinds(events: list[E.Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def code(events: list[E.Event]) -> str:
    assert len(events) == 1 and isinstance(events[0], E.Rejected), events
    return events[0].code
