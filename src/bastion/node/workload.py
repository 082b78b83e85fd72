"""Seeded spot traffic for crash tests, drills and benchmarks: resting limits near a mid
price, some crossing orders, and cancels of earlier orders by client id."""

from __future__ import annotations

import random

from bastion.core import commands as C
from bastion.demo import BTC_USDT, demo_setup

MID = 5_000_000


def spot_setup(accounts: int) -> list[C.Command]:
    return demo_setup(list(range(1, accounts + 1)))


class SpotWorkload:
    def __init__(self, seed: int, *, accounts: int = 20, tag: str = "w") -> None:
        self.rng = random.Random(seed)
        self.accounts = accounts
        self.tag = tag
        self.count = 0
        self.live: list[tuple[int, str]] = []

    def next(self) -> C.Command:
        rng = self.rng
        self.count += 1
        if self.live and rng.random() < 0.35:
            i = rng.randrange(len(self.live))
            self.live[i], self.live[-1] = self.live[-1], self.live[i]
            account, client_id = self.live.pop()
            return C.CancelOrder(account=account, market=BTC_USDT, client_id=client_id)
        account = rng.randrange(1, self.accounts + 1)
        side: C.Side = "buy" if rng.random() < 0.5 else "sell"
        if rng.random() < 0.15:
            price = MID + 5 if side == "buy" else MID - 5
        else:
            off = rng.randrange(1, 300)
            price = MID - off if side == "buy" else MID + off
        client_id = f"{self.tag}{self.count}"
        self.live.append((account, client_id))
        if len(self.live) > 2_000:
            self.live.pop(0)
        return C.PlaceOrder(
            account=account,
            market=BTC_USDT,
            side=side,
            price=price,
            qty=rng.randrange(1, 30) * 1_000,
            client_id=client_id,
        )

    def batch(self, n: int) -> list[C.Command]:
        return [self.next() for _ in range(n)]
