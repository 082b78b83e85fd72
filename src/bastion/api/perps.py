"""Perpetual-futures views (positions, mark/index, funding) over whatever the core exposes.

Kept apart so spot routes never depend on perpetual internals; until the core has perpetuals
every function here answers "none".
"""

from __future__ import annotations

from typing import Any

from bastion.api import schemas as S
from bastion.api.app_context import Context
from bastion.api.native import now_ms
from bastion.core.state import Market


def positions(ctx: Context, account: int) -> list[S.Position]:
    return []


def binance_account(ctx: Context, account: int) -> dict[str, Any]:
    return {"totalInitialMargin": "0", "totalMaintMargin": "0", "totalWalletBalance": "0",
            "totalUnrealizedProfit": "0", "totalMarginBalance": "0",
            "availableBalance": "0", "maxWithdrawAmount": "0", "assets": [], "positions": [],
            "updateTime": now_ms()}


def binance_positions(ctx: Context, account: int, markets: list[Market]) -> list[dict[str, Any]]:
    return []


def binance_premium(ctx: Context, m: Market) -> dict[str, Any]:
    return {"symbol": m.base + m.quote, "markPrice": "0", "indexPrice": "0",
            "estimatedSettlePrice": "0", "lastFundingRate": "0", "interestRate": "0",
            "nextFundingTime": 0, "time": now_ms()}


def binance_funding_history(ctx: Context, markets: list[Market], limit: int
                            ) -> list[dict[str, Any]]:
    return []


async def binance_set_leverage(ctx: Context, account: int, m: Market, leverage: int
                               ) -> dict[str, Any]:
    return {"symbol": m.base + m.quote, "leverage": leverage, "maxNotionalValue": "0"}
