"""TP/SL commands and firing: validation, placement off-book, and conversion into orders.

A trigger reserves no margin while it waits (like Binance's conditional orders); when the mark
crosses it, it becomes a market order (``stop_market``, ``take_profit``) or a GTC limit at
``price`` (``*_limit``) and passes every check a user order does. A refused conversion is
reported on ``TriggerFired.result`` and the trigger is gone. Triggers survive a cancel-all (the
Paradex 2026 reopening kept TP/SL) and are dropped when the market closes.
"""

from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.ledger.margin import MarginLedger
from bastion.core.orders import place_order
from bastion.core.perp.state import PerpMarket, Trigger
from bastion.core.perp.triggers import LIMIT_TYPES, TRIGGER_TYPES, direction, fires
from bastion.core.rules import MAX_CLIENT_ID, Refused, valid_price, valid_qty
from bastion.core.state import Market

#: a trigger may be placed unless the market accepts nothing new at all
NO_TRIGGERS = frozenset(("halted", "closed", "cancel_only"))


def place_trigger(pe: MarginLedger, cmd: C.PlaceTrigger, out: list[E.Event]) -> None:
    v = pe.v
    mkt, pm = pe.perp_market(cmd.market)
    acct = v.account(cmd.account)
    side = cmd.side
    if side != "buy" and side != "sell":
        raise Refused(X.INVALID_ARGUMENT, f"side must be buy or sell, got {side!r}")
    if cmd.order_type not in TRIGGER_TYPES:
        raise Refused(X.INVALID_ARGUMENT, f"trigger type must be one of "
                                          f"{', '.join(sorted(TRIGGER_TYPES))}")
    qty = valid_qty(mkt, cmd.qty)
    trigger_price = valid_price(mkt, cmd.trigger_price)
    price = 0
    if cmd.order_type in LIMIT_TYPES:
        price = valid_price(mkt, cmd.price)
    elif cmd.price:
        raise Refused(X.INVALID_ARGUMENT, "market triggers take no limit price")
    if type(cmd.reduce_only) is not bool:
        raise Refused(X.INVALID_ARGUMENT, "reduce_only must be a boolean")
    client_id = cmd.client_id
    if not isinstance(client_id, str) or len(client_id) > MAX_CLIENT_ID:
        raise Refused(X.INVALID_ARGUMENT, f"client_id must be a string of at most "
                                          f"{MAX_CLIENT_ID} characters")
    if client_id and (acct.account, client_id) in pe.triggers.client_ids:
        raise Refused(X.DUPLICATE_CLIENT_ID, f"client_id {client_id!r} is already used by "
                                             "a trigger")
    if mkt.mode in NO_TRIGGERS:
        raise Refused(X.MARKET_MODE, f"market {mkt.market} is {mkt.mode}: no new triggers")
    if not pm.mark:
        raise Refused(X.NO_MARK_PRICE, f"{mkt.market} has no mark price yet")
    t = Trigger(trigger_id=pe.next_trigger_id, account=acct.account, market=mkt.market,
                side=side, qty=qty, trigger_price=trigger_price, order_type=cmd.order_type,
                direction=direction(cmd.order_type, side), price=price,
                reduce_only=cmd.reduce_only, client_id=client_id, ts=v.ts)
    if fires(t, pm.mark):
        raise Refused(X.WOULD_TRIGGER, f"mark {pm.mark} already satisfies trigger "
                                       f"{trigger_price} ({t.direction})")
    pe.next_trigger_id += 1
    pe.triggers.add(t)
    out.append(E.TriggerAccepted(seq=v.seq, ts=v.ts, trigger_id=t.trigger_id,
                                 account=t.account, market=t.market, side=side, qty=qty,
                                 trigger_price=trigger_price, order_type=t.order_type,
                                 price=price, reduce_only=t.reduce_only, client_id=client_id))


def cancel_trigger(pe: MarginLedger, cmd: C.CancelTrigger, out: list[E.Event]) -> None:
    v = pe.v
    mkt, _ = pe.perp_market(cmd.market)
    if mkt.mode == "closed":
        raise Refused(X.MARKET_MODE, f"market {mkt.market} is closed")
    if type(cmd.trigger_id) is not int or not isinstance(cmd.client_id, str):
        raise Refused(X.INVALID_ARGUMENT, "trigger_id must be an integer, client_id a string")
    tid = cmd.trigger_id or pe.triggers.client_ids.get((cmd.account, cmd.client_id), 0)
    t = pe.triggers.by_id.get(tid)
    if t is None or t.account != cmd.account or t.market != mkt.market:
        raise Refused(X.UNKNOWN_TRIGGER, f"no trigger {cmd.trigger_id or cmd.client_id!r} for "
                                         f"account {cmd.account} in {mkt.market}")
    pe.triggers.remove(tid)
    out.append(E.TriggerCanceled(seq=v.seq, ts=v.ts, trigger_id=tid, account=t.account,
                                 market=t.market, reason="CANCELED"))


def fire(pe: MarginLedger, mkt: Market, pm: PerpMarket, out: list[E.Event]) -> None:
    """Turn every trigger the mark crossed into an order, oldest first."""
    v = pe.v
    due = pe.triggers.due(pm.market, pm.mark)
    for i, t in enumerate(due):
        if mkt.mode != "open":
            for rest in due[i:]:  # a guard tripped while executing: they wait, untouched
                pe.triggers.add(rest)
            return
        limit = t.order_type in LIMIT_TYPES
        try:
            order = place_order(v, C.PlaceOrder(
                account=t.account, market=t.market, side=t.side, qty=t.qty,
                price=t.price if limit else 0, order_type="limit" if limit else "market",
                reduce_only=t.reduce_only, seq=v.seq, ts=v.ts), out)
        except Refused as r:
            out.append(E.TriggerFired(seq=v.seq, ts=v.ts, trigger_id=t.trigger_id,
                                      account=t.account, market=t.market, mark=pm.mark,
                                      result=r.code))
            continue
        out.append(E.TriggerFired(seq=v.seq, ts=v.ts, trigger_id=t.trigger_id,
                                  account=t.account, market=t.market, mark=pm.mark,
                                  order_id=order.order_id))
