"""Demo traffic for ``make run``: the drills' market maker and taker, on every demo market,
so a newcomer sees a moving book and trades on first start (``BASTION_DEMO_TRAFFIC=0`` turns
it off). The bots are ordinary API users of the server they run in: they trade over HTTP on
loopback with their own keys, funded once through journaled deposits."""

from __future__ import annotations

import asyncio
import logging
import random
from decimal import Decimal
from typing import Any

from bastion.core import commands as C
from bastion.drills.bots import Bot, Crew, MarketMaker, Taker, Tape
from bastion.drills.client import TradingClient

#: demo bot accounts start here (two per market: maker, taker)
FIRST_ACCOUNT = 9_000
#: where the spot books start when they are empty (quote units per base)
START = {"BTC": Decimal(50_000), "ETH": Decimal(3_000)}
TOP_UP = {"USDT": 10**15, "BTC": 10**11, "ETH": 10**12}   # smallest units (8 decimals)
PERIOD_S = 1.0


async def fund(node: Any, account: int, assets: list[str], perp_settle: str | None) -> None:
    """Deposit up to the target balance (journaled), never more on a restart."""
    acct = node.engine.accounts.get(account)
    cmds: list[C.Command] = []
    for asset in assets:
        have = acct.available.get(asset, 0) if acct else 0
        target = TOP_UP.get(asset, 10**12)
        if asset in node.engine.assets and have < target // 2:
            cmds.append(C.Deposit(account=account, asset=asset, amount=target - have,
                                  reason="demo traffic"))
    if perp_settle and not node.engine.perp.margins.get((account, perp_settle)):
        cmds.append(C.AddMargin(account=account, asset=perp_settle,
                                amount=TOP_UP[perp_settle] // 4))
    if cmds:
        await node.submit_many(cmds)


async def bot_key(keys: Any, account: int) -> tuple[str, str]:
    for k in keys.for_account(account):
        if k.label == "demo-bot":
            return k.key, k.secret.decode()
    key, secret = await keys.put(account, frozenset({"read", "trade"}), label="demo-bot")
    return key.key, secret


async def start(ctx: Any, seed: int | None = None) -> Crew:
    """Fund and start one maker and one taker per market (call once the node is up)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)   # one line per request otherwise
    node = ctx.gateway.node
    base = f"http://{ctx.settings.host}:{ctx.settings.port}"
    rng = random.Random(seed)
    tape = Tape()
    bots: list[Bot] = []
    account = FIRST_ACCOUNT
    for name, mkt in sorted(node.engine.markets.items()):
        perp = mkt.kind == "perp"
        for cls, lots in ((MarketMaker, 2 if perp else 50), (Taker, 1 if perp else 20)):
            await fund(node, account, [mkt.quote, mkt.base], mkt.quote if perp else None)
            key, secret = await bot_key(ctx.keys, account)
            bots.append(cls(f"demo-{cls.role}-{account}", TradingClient(base, key, secret),
                            account, name, tape, random.Random(rng.random()), PERIOD_S,
                            start_ref=None if perp else START.get(mkt.base), lots=lots))
            account += 1
    crew = Crew(bots)
    crew.start()
    return crew


async def stop(crew: Crew) -> None:
    await asyncio.wait_for(crew.close(), 10)
