"""Operator mass cancel with filters (``CancelOrders``): every resting order and TP/SL trigger
the filter selects, evaluated when the command applies, so nothing placed just before it
escapes and the journal records the filter and the reason.

Paradex, Jan 2026: everything was cancelled except take-profit and stop-loss orders
(``except_kinds=["tp_sl"]``), so traders kept their protection when trading reopened.
Kinds: ``limit`` (resting, not post-only), ``post_only``, ``market`` (market orders never
rest: always none) and ``tp_sl`` (triggers of perpetual markets).
"""

from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.ledger.margin import MarginLedger
from bastion.core.modes import accepts_cancel
from bastion.core.perp.state import Trigger
from bastion.core.records import Order
from bastion.core.rules import Refused
from bastion.core.venue import Venue

KINDS = ("limit", "post_only", "market", "tp_sl")
#: most markets or accounts one filter may name
MAX_FILTER = 10_000


def check(eng: Venue, cmd: C.CancelOrders) -> None:
    """Validate the whole filter before anything is cancelled."""
    for name, values, kind in (("markets", cmd.markets, str), ("accounts", cmd.accounts, int),
                               ("kinds", cmd.kinds, str), ("except_kinds", cmd.except_kinds,
                                                           str)):
        if not isinstance(values, list) or len(values) > MAX_FILTER or any(
                type(x) is not kind for x in values):
            raise Refused(X.INVALID_ARGUMENT, f"{name} must be a list of at most {MAX_FILTER} "
                                              f"{kind.__name__}s")
    unknown = sorted((set(cmd.kinds) | set(cmd.except_kinds)) - set(KINDS))
    if unknown:
        raise Refused(X.INVALID_ARGUMENT, f"unknown order kind(s) {unknown}; known: "
                                          f"{', '.join(KINDS)}")
    if cmd.side not in ("", "buy", "sell"):
        raise Refused(X.INVALID_ARGUMENT, f"side must be buy, sell or empty, not {cmd.side!r}")
    for m in cmd.markets:
        eng.market(m)
    if not isinstance(cmd.reason, str) or not cmd.reason.strip():
        raise Refused(X.INVALID_ARGUMENT, "a mass cancel needs a reason")


def wants(cmd: C.CancelOrders, kind: str, market: str, account: int, side: str) -> bool:
    return ((not cmd.kinds or kind in cmd.kinds) and kind not in cmd.except_kinds
            and (not cmd.markets or market in cmd.markets)
            and (not cmd.accounts or account in cmd.accounts)
            and (not cmd.side or side == cmd.side))


def order_kind(order: Order) -> str:
    return "post_only" if order.post_only else "limit"


def margin_ledger(v: Venue) -> MarginLedger:
    """TP/SL triggers live in the perpetual (margin) ledger."""
    led = v.ledgers["perp"]
    assert isinstance(led, MarginLedger)
    return led


def select(eng: Venue, cmd: C.CancelOrders) -> tuple[list[Order], list[Trigger]]:
    """The orders and triggers the filter selects, by id (orders in a market that accepts no
    cancel, i.e. ``closed``, are never selected)."""
    orders = sorted((o for o in eng.orders.values()
                     if accepts_cancel(eng.markets[o.market].mode)
                     and wants(cmd, order_kind(o), o.market, o.account, o.side)),
                    key=lambda o: o.order_id)
    triggers = sorted((t for t in margin_ledger(eng).triggers.by_id.values()
                       if wants(cmd, "tp_sl", t.market, t.account, t.side)),
                      key=lambda t: t.trigger_id)
    return orders, triggers


def cancel_orders(eng: Venue, cmd: C.CancelOrders, out: list[E.Event]) -> None:
    check(eng, cmd)
    orders, triggers = select(eng, cmd)
    open_before = len(eng.orders) + len(margin_ledger(eng).triggers.by_id)
    reason = cmd.reason
    for order in orders:
        m = eng.markets[order.market]
        eng.close_order(order, m, eng.books[m.market].side(order.side == "buy"), reason, out)
    for t in triggers:
        margin_ledger(eng).triggers.remove(t.trigger_id)
        out.append(E.TriggerCanceled(seq=eng.seq, ts=eng.ts, trigger_id=t.trigger_id,
                                     account=t.account, market=t.market, reason=reason))
    left = len(eng.orders) + len(margin_ledger(eng).triggers.by_id)
    assert left == open_before - len(orders) - len(triggers)
