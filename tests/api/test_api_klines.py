"""Candles for every interval, as Binance gives them: an interval without trades carries the
previous close (open = high = low = close) and volume 0; nothing is invented before the first
trade, and the window is bounded by ``limit`` however long the market was idle."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.api.read.model import ReadModel
from bastion.core import events as E
from bastion.core.engine import Engine
from bastion.demo import demo_setup, stamp

M = 60_000
T0 = 1_800_000_000_000 - 1_800_000_000_000 % (60 * M)


def _engine() -> Engine:
    eng = Engine()
    for cmd in stamp(demo_setup()):
        eng.apply(cmd)
    return eng


ENGINE = _engine()


def _model(trades: list[tuple[int, int, int]]) -> ReadModel:
    """``(ts, price, qty)`` trades on BTC-USDT."""
    rm = ReadModel(lambda: ENGINE)
    for i, (ts, price, qty) in enumerate(trades, 1):
        rm.apply([E.Trade(seq=i, ts=ts, trade_id=i, market="BTC-USDT", price=price, qty=qty,
                          taker_side="buy", maker_order=2 * i, taker_order=2 * i + 1,
                          maker_account=1, taker_account=2, maker_fee=0, taker_fee=0,
                          maker_remaining=0, taker_remaining=0)])
    return rm


def ohlcv(rm: ReadModel, step: int, limit: int, **kw: int) -> list[tuple[int, ...]]:
    return [(c.start - T0, c.open, c.high, c.low, c.close, c.volume)
            for c in rm.klines("BTC-USDT", step, limit, **kw)]


def test_gaps_carry_the_previous_close() -> None:
    rm = _model([(T0 + 10, 100, 5), (T0 + 20, 90, 1), (T0 + 3 * M + 5, 110, 2)])
    now = T0 + 5 * M + 30_000
    assert ohlcv(rm, M, 10, now=now) == [
        (0, 100, 100, 90, 90, 6), (M, 90, 90, 90, 90, 0), (2 * M, 90, 90, 90, 90, 0),
        (3 * M, 110, 110, 110, 110, 2), (4 * M, 110, 110, 110, 110, 0),
        (5 * M, 110, 110, 110, 110, 0)]
    assert ohlcv(rm, M, 2, start=T0 + M + 1, now=now) == [
        (M, 90, 90, 90, 90, 0), (2 * M, 90, 90, 90, 90, 0)]
    assert ohlcv(rm, M, 2, now=now) == [(4 * M, 110, 110, 110, 110, 0),
                                        (5 * M, 110, 110, 110, 110, 0)]
    assert ohlcv(rm, 3 * M, 10, now=now) == [(0, 100, 100, 90, 90, 6),
                                             (3 * M, 110, 110, 110, 110, 2)]
    assert ohlcv(rm, M, 10, end=T0 + 2 * M, now=now)[-1] == (2 * M, 90, 90, 90, 90, 0)
    assert ohlcv(rm, M, 10, start=T0 - 10 * M, end=T0 - M) == []  # before the first trade


def test_idle_for_a_year_costs_only_the_limit() -> None:
    rm = _model([(T0, 100, 1)])
    rows = ohlcv(rm, M, 3, now=T0 + 365 * 24 * 60 * M)
    assert len(rows) == 3 and all(r[1:] == (100, 100, 100, 100, 0) for r in rows)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40 * M), st.integers(1, 10_000),
                          st.integers(1, 100)), min_size=1, max_size=40),
       st.sampled_from([M, 3 * M, 5 * M, 15 * M]))
def test_every_interval_present_and_continuous(trades: list[tuple[int, int, int]],
                                               step: int) -> None:
    trades = sorted((T0 + ts, px, q) for ts, px, q in trades)
    rm = _model(trades)
    now = T0 + 45 * M
    rows = rm.klines("BTC-USDT", step, 1000, now=now)
    first = trades[0][0] - trades[0][0] % step
    assert [c.start for c in rows] == list(range(first, now - now % step + 1, step))
    assert sum(c.volume for c in rows) == sum(q for _, _, q in trades)
    for prev, cur in zip(rows, rows[1:], strict=False):
        if cur.volume == 0:
            assert (cur.open, cur.high, cur.low, cur.close) == (prev.close,) * 4
    for c in rows:
        inside = [px for ts, px, _ in trades if c.start <= ts < c.start + step]
        if inside:
            assert (c.open, c.high, c.low, c.close) == (inside[0], max(inside), min(inside),
                                                         inside[-1])
