"""Selective mass cancel from the operator's side: the filter, a preview (the dry run: counts
per kind, selected and kept) and the one journaled ``CancelOrders`` command that does it.

The selection itself is the core's (``bastion.core.cancels``): the preview and the command
apply the same rule, and the command re-evaluates it when it applies, so an order placed
between the preview and the cancel is treated like every other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bastion.core import cancels
from bastion.core import commands as C
from bastion.core.engine import Engine
from bastion.core.rules import Refused

KINDS = cancels.KINDS


@dataclass(frozen=True)
class CancelFilter:
    markets: frozenset[str] = frozenset()
    accounts: frozenset[int] = frozenset()
    kinds: frozenset[str] = frozenset()          # empty: every kind
    except_kinds: frozenset[str] = frozenset()
    side: str = ""                               # "", "buy" or "sell"

    def command(self, reason: str) -> C.CancelOrders:
        return C.CancelOrders(markets=sorted(self.markets), accounts=sorted(self.accounts),
                              kinds=sorted(self.kinds), except_kinds=sorted(self.except_kinds),
                              side=self.side, reason=reason)


@dataclass
class Selection:
    orders: list[tuple[int, str, int]] = field(default_factory=list)    # account, market, id
    triggers: list[tuple[int, str, int]] = field(default_factory=list)
    by_kind: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    kept_by_kind: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    @property
    def count(self) -> int:
        return len(self.orders) + len(self.triggers)


def _counts(engine: Engine, cmd: C.CancelOrders) -> tuple[Selection, dict[str, int]]:
    orders, triggers = cancels.select(engine, cmd)
    sel = Selection(orders=[(o.account, o.market, o.order_id) for o in orders],
                    triggers=[(t.account, t.market, t.trigger_id) for t in triggers])
    for o in orders:
        sel.by_kind[cancels.order_kind(o)] += 1
    sel.by_kind["tp_sl"] = len(triggers)
    return sel, sel.by_kind


def select(engine: Engine, flt: CancelFilter) -> Selection:
    """What the cancel would do now (raises ``ValueError`` with the core's message when the
    filter is invalid)."""
    cmd = flt.command("preview")
    try:
        cancels.check(engine, cmd)
    except Refused as exc:
        raise ValueError(exc.message) from exc
    sel, chosen = _counts(engine, cmd)
    _, total = _counts(engine, C.CancelOrders(reason="count"))
    sel.kept_by_kind = {k: total[k] - chosen[k] for k in KINDS}
    return sel
