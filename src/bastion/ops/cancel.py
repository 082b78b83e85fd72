"""Selective mass cancel: which resting orders and TP/SL triggers a filter selects, and the
journaled commands that cancel exactly those.

Paradex, Jan 2026: the operator cancelled every open order *except* take-profit and stop-loss
orders (``--except-kind tp_sl``), so traders kept their protection when trading reopened.
Kinds: ``limit`` (resting limit orders that are not post-only), ``post_only``, ``market``
(market orders never rest; listed for completeness, always 0) and ``tp_sl`` (triggers).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bastion.core import commands as C
from bastion.core.engine import Engine

KINDS = ("limit", "post_only", "market", "tp_sl")
#: most orders one cancel may select (the command batch stays bounded)
MAX_SELECTED = 1_000_000


@dataclass(frozen=True)
class CancelFilter:
    markets: frozenset[str] = frozenset()
    accounts: frozenset[int] = frozenset()
    kinds: frozenset[str] = frozenset()          # empty: every kind
    except_kinds: frozenset[str] = frozenset()
    side: str = ""                               # "", "buy" or "sell"

    def __post_init__(self) -> None:
        bad = (self.kinds | self.except_kinds) - set(KINDS)
        if bad:
            raise ValueError(f"unknown order kind(s) {sorted(bad)}; known: {', '.join(KINDS)}")
        if self.side not in ("", "buy", "sell"):
            raise ValueError(f"side must be buy or sell, not {self.side!r}")

    def wants(self, kind: str, market: str, account: int, side: str) -> bool:
        return ((not self.kinds or kind in self.kinds) and kind not in self.except_kinds
                and (not self.markets or market in self.markets)
                and (not self.accounts or account in self.accounts)
                and (not self.side or side == self.side))


@dataclass
class Selection:
    orders: list[tuple[int, str, int]] = field(default_factory=list)    # account, market, id
    triggers: list[tuple[int, str, int]] = field(default_factory=list)
    by_kind: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    kept_by_kind: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    @property
    def count(self) -> int:
        return len(self.orders) + len(self.triggers)


def select(engine: Engine, flt: CancelFilter) -> Selection:
    unknown = flt.markets - set(engine.markets)
    if unknown:
        raise ValueError(f"unknown market(s) {sorted(unknown)}")
    sel = Selection()
    for order in engine.orders.values():
        if not order.live:
            continue
        kind = "post_only" if order.post_only else "limit"
        if flt.wants(kind, order.market, order.account, order.side):
            sel.orders.append((order.account, order.market, order.order_id))
            sel.by_kind[kind] += 1
        else:
            sel.kept_by_kind[kind] += 1
    for trig in engine.perp.triggers.by_id.values():
        if flt.wants("tp_sl", trig.market, trig.account, trig.side):
            sel.triggers.append((trig.account, trig.market, trig.trigger_id))
            sel.by_kind["tp_sl"] += 1
        else:
            sel.kept_by_kind["tp_sl"] += 1
    if sel.count > MAX_SELECTED:
        raise ValueError(f"{sel.count} orders selected, more than {MAX_SELECTED} per cancel")
    sel.orders.sort()
    sel.triggers.sort()
    return sel


def cancel_commands(sel: Selection) -> list[C.Command]:
    """One journaled cancel per selected order or trigger (applied as one batch)."""
    cmds: list[C.Command] = [C.CancelOrder(account=a, market=m, order_id=i)
                             for a, m, i in sel.orders]
    cmds += [C.CancelTrigger(account=a, market=m, trigger_id=i) for a, m, i in sel.triggers]
    return cmds
