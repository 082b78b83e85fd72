"""A tiny sequencer for core tests: stamps seq/ts the way the node does."""

from __future__ import annotations

from bastion.core import commands as C
from bastion.core import events as E
from bastion.core.engine import Engine
from bastion.demo import BTC_USDT, demo_setup

PX = 5_000_000  # 50,000.00
LOT = 1_000


class Harness:
    def __init__(self, engine: Engine | None = None, accounts: list[int] | None = None,
                 setup: bool = True) -> None:
        self.engine = engine or Engine()
        self.ts = 1_700_000_000_000
        self.log: list[C.Command] = []
        if setup:
            for cmd in demo_setup(accounts or [1, 2, 3]):
                self.do(cmd)

    def do(self, cmd: C.Command, dt: int = 1) -> list[E.Event]:
        self.ts += dt
        cmd.seq = self.engine.seq + 1
        cmd.ts = self.ts
        self.log.append(cmd)
        return self.engine.apply(cmd)

    def place(self, account: int, side: str, qty_lots: int, price: int = PX,
              market: str = BTC_USDT, **kw: object) -> list[E.Event]:
        return self.do(C.PlaceOrder(account=account, market=market, side=side,  # type: ignore[arg-type]
                                    price=price, qty=qty_lots * LOT, **kw))  # type: ignore[arg-type]

    def bal(self, account: int, asset: str) -> tuple[int, int]:
        acct = self.engine.accounts[account]
        return acct.available.get(asset, 0), acct.held.get(asset, 0)


def only(events: list[E.Event], kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, kind)]


def rejected(events: list[E.Event]) -> str:
    assert len(events) == 1 and isinstance(events[0], E.Rejected), events
    return events[0].code
