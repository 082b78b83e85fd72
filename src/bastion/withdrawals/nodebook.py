"""The worker's view of a running leader node: reads the engine's wallet, journals outcomes
as core commands through ``node.submit_many`` (one durable write per batch)."""

from __future__ import annotations

import logging
from typing import Any

from bastion.core import commands as C
from bastion.core.wallet import state as S
from bastion.withdrawals.book import (
    Confirmed,
    DepositSeen,
    Failed,
    Outcome,
    Paused,
    Queued,
    Released,
    Submitted,
)

log = logging.getLogger("bastion.withdrawals")
_QUEUED = (S.APPROVED, S.SUBMITTED)


def to_command(o: Outcome) -> C.Command:
    if isinstance(o, Submitted):
        return C.SubmitWithdrawal(wid=o.wid, key=o.key)
    if isinstance(o, Confirmed):
        return C.ConfirmWithdrawal(wid=o.wid, txid=o.txid)
    if isinstance(o, Failed):
        return C.FailWithdrawal(wid=o.wid, reason=o.reason[:500])
    if isinstance(o, Released):
        return C.ReleaseWithdrawal(wid=o.wid)
    if isinstance(o, Paused):
        return C.PauseWithdrawals(asset=o.asset, paused=True, reason=o.reason, by="auto")
    assert isinstance(o, DepositSeen)
    return C.ObserveDeposit(txid=o.txid, asset=o.asset, address=o.address, amount=o.amount,
                            confirmations=o.confirmations)


class NodeBook:
    def __init__(self, node: Any) -> None:
        self.node = node

    @property
    def wallet(self) -> Any:
        return self.node.engine.wallet

    def queue(self, asset: str) -> list[Queued]:
        return [Queued(w.wid, w.asset, w.address, w.amount, w.state, w.created_ts)
                for w in self.wallet.open.values() if w.asset == asset and w.state in _QUEUED]

    def due(self, asset: str, now_ms: int) -> list[int]:
        return [w.wid for w in self.wallet.open.values()
                if w.asset == asset and w.state == S.REQUESTED and w.not_before <= now_ms]

    def assets(self) -> list[str]:
        return sorted(self.wallet.rules)

    def paused(self, asset: str) -> bool:
        return asset not in self.wallet.rules or bool(self.wallet.paused_reason(asset))

    def deposit_progress(self, txid: str) -> tuple[int, bool] | None:
        dep = self.wallet.deposits.get(txid)
        return None if dep is None else (dep.confirmations, dep.credited)

    def knows_address(self, asset: str, address: str) -> bool:
        return (asset, address) in self.wallet.deposit_addresses

    async def record(self, outcomes: list[Outcome]) -> None:
        results = await self.node.submit_many([to_command(o) for o in outcomes])
        for o, events in zip(outcomes, results, strict=True):
            for ev in events:
                if type(ev).__name__ == "Rejected" and ev.code not in ("WITHDRAWAL_STATE",
                                                                      "NO_CHANGE"):
                    log.warning("journal refused %s: %s %s", o, ev.code, ev.message)
