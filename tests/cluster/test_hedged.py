"""``hedged``: a read asked again every interval, first answer wins. During a NATS election an
ask gets no answer at all; a leader elected meanwhile must be heard at once, not after the
client's whole timeout."""

from __future__ import annotations

import asyncio
import time

import pytest

from bastion.journal.jetstream import hedged


def test_a_later_ask_answers_before_the_first_times_out() -> None:
    asks: list[float] = []

    async def ask() -> str:
        asks.append(time.monotonic())
        if len(asks) < 3:  # sent mid-election: never answered (until the client times out)
            await asyncio.sleep(2.0)
            raise TimeoutError("no answer")
        return "leader"

    async def go() -> tuple[str, float]:
        t0 = time.monotonic()
        answer = await hedged(ask, every=0.05)
        return answer, time.monotonic() - t0

    answer, took = asyncio.run(go())
    assert answer == "leader" and len(asks) == 3
    assert took < 1.0, took  # not the first ask's 2 s


def test_the_first_error_ends_it_and_slow_asks_are_not_dropped() -> None:
    async def refused() -> str:
        raise LookupError("not found")

    with pytest.raises(LookupError):
        asyncio.run(hedged(refused, every=0.05))

    calls = 0

    async def slow() -> int:  # a slow but alive server: its first answer still counts
        nonlocal calls
        calls += 1
        mine = calls
        await asyncio.sleep(0.3)
        return mine

    assert asyncio.run(hedged(slow, every=0.1)) == 1
    assert calls >= 3
