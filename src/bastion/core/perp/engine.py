"""PerpEngine: the perpetual ledger beside the spot engine, and its hooks into it.

The spot ``Engine`` keeps owning sequencing, books, order ids and modes; it calls in here for
perp markets (``place_cmd``, ``amend_cmd``, ``release``, ``mode_changed``, export/restore and
invariants) and routes the perp commands to the handlers registered by ``__init__``.

Every perp command ends with ``settle``: accounts whose positions or collateral changed are
re-keyed in the liquidation index and, if below maintenance in live markets, liquidated.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.engine import Refused
from bastion.core.matching import GuardViolation
from bastion.core.perp import liquidation
from bastion.core.perp.calc import (
    ALWAYS_LONG,
    ALWAYS_SHORT,
    PPM,
    maintenance,
    notional,
    threshold,
    tier_for,
)
from bastion.core.perp.ledger import Risk, realize, risk
from bastion.core.perp.liqindex import LiqIndex
from bastion.core.perp.state import (
    INSURANCE,
    MarginAccount,
    PerpMarket,
    PerpState,
    Position,
)
from bastion.core.perp.triggers import TriggerBook
from bastion.core.state import Market, Order

if TYPE_CHECKING:
    from bastion.core.engine import Engine

Key = tuple[int, str]
#: A settle pass that loops this often is a defect (liquidations feeding each other forever).
MAX_SETTLE_ROUNDS = 10_000


class PerpEngine:
    def __init__(self, eng: Engine) -> None:
        self.eng = eng
        self.markets: dict[str, PerpMarket] = {}
        self.margins: dict[Key, MarginAccount] = {}
        #: market -> account -> position
        self.positions: dict[str, dict[int, Position]] = {}
        #: (account, asset) -> market -> position (the account's cross-margin book)
        self.held: dict[Key, dict[str, Position]] = {}
        self.triggers = TriggerBook()
        self.next_trigger_id = 1
        self.reduce_only: set[int] = set()
        self.liq = LiqIndex()
        self.touched: set[Key] = set()
        #: open perp order ids per (account, settle asset): liquidation cancels without a scan
        self.orders_of: dict[Key, set[int]] = {}
        #: ADL queues ranked once per command: (market, long side) -> positions
        self.adl_queues: dict[tuple[str, bool], deque[Position]] = {}
        from bastion.core.perp import accounts, funding, market, oracle, orders, triggers_cmd

        handlers: dict[type, Callable[[PerpEngine, Any, list[E.Event]], None]] = {
            C.CreatePerpMarket: market.create_perp_market,
            C.UpdateIndex: oracle.update_index,
            C.ResetOracle: oracle.reset_oracle,
            C.FundingTick: funding.funding_tick,
            C.AddMargin: accounts.add_margin,
            C.RemoveMargin: accounts.remove_margin,
            C.SetLeverage: accounts.set_leverage,
            C.FundInsurance: accounts.fund_insurance,
            C.PlaceTrigger: triggers_cmd.place_trigger,
            C.CancelTrigger: triggers_cmd.cancel_trigger,
        }
        self._orders = orders
        for kind, fn in handlers.items():
            eng._handlers[kind] = self._wrap(fn)

    def _wrap(self, fn: Callable[[PerpEngine, Any, list[E.Event]], None]
              ) -> Callable[[Any, list[E.Event]], None]:
        def handler(cmd: Any, out: list[E.Event]) -> None:
            self.begin()
            fn(self, cmd, out)
            self.settle(out)
        return handler

    # ------------------------------------------------------------------ engine hooks

    def place_cmd(self, cmd: C.PlaceOrder, out: list[E.Event]) -> None:
        self.begin()
        self._orders.place_cmd(self, cmd, out)
        self.settle(out)

    def amend_cmd(self, cmd: C.AmendOrder, out: list[E.Event]) -> None:
        self.begin()
        self._orders.amend(self, cmd, out)
        self.settle(out)

    def release(self, order: Order) -> None:
        """An order leaves the book (cancel, expiry, self-trade): drop its margin hold."""
        pm = self.markets[order.market]
        key = (order.account, pm.settle)
        if order.hold:
            self.margins[key].order_im -= order.hold
            order.hold = 0
        self.reduce_only.discard(order.order_id)
        mine = self.orders_of.get(key)
        if mine is not None:
            mine.discard(order.order_id)
            if not mine:
                del self.orders_of[key]

    def opened(self, order: Order, settle: str) -> None:
        """Index a newly accepted perp order under its account."""
        self.orders_of.setdefault((order.account, settle), set()).add(order.order_id)

    def mode_changed(self, mkt: Market, out: list[E.Event]) -> None:
        """Any mode change disarms the market until a fresh index arrives while it is open;
        closing it also cancels its triggers."""
        pm = self.markets[mkt.market]
        pm.armed = False
        if mkt.mode == "closed":
            for t in self.triggers.of_market(mkt.market):
                self.triggers.remove(t.trigger_id)
                out.append(E.TriggerCanceled(seq=self.eng.seq, ts=self.eng.ts,
                                             trigger_id=t.trigger_id, account=t.account,
                                             market=t.market, reason="MARKET_CLOSED"))

    # ------------------------------------------------------------------ lookups

    def perp_market(self, market: object) -> tuple[Market, PerpMarket]:
        """The spot record and perp record of a perp market, or the right reject."""
        pm = self.markets.get(market) if type(market) is str else None
        if pm is not None:
            return self.eng.markets[pm.market], pm
        mkt = self.eng._market(market)
        pm = self.markets.get(mkt.market)
        if pm is None:
            raise Refused(X.NOT_PERP, f"{mkt.market} is not a perpetual market")
        return mkt, pm

    def margin(self, account: int, asset: str) -> MarginAccount:
        key = (account, asset)
        ma = self.margins.get(key)
        if ma is None:
            ma = self.margins[key] = MarginAccount(account=account, asset=asset)
        return ma

    def leverage(self, ma: MarginAccount | None, pm: PerpMarket) -> int:
        if ma is None:
            return pm.default_leverage
        return ma.leverage.get(pm.market, pm.default_leverage)

    def risk(self, ma: MarginAccount) -> Risk:
        return risk(ma.collateral, self.held.get((ma.account, ma.asset), {}), self.markets,
                    ma.leverage)

    def available(self, ma: MarginAccount | None) -> int:
        """What new orders may reserve: equity - position initial margin - order holds."""
        if ma is None:
            return 0
        r = self.risk(ma)
        return r.equity - r.initial - ma.order_im

    def active(self, pm: PerpMarket) -> bool:
        """Liquidations, TP/SL and funding act only on an open market with a fresh oracle that
        arrived after the last mode change."""
        eng = self.eng
        return (pm.armed and eng.markets[pm.market].mode == "open"
                and eng.ts - pm.index_ts <= pm.index_max_age_ms)

    def all_active(self, who: Key) -> bool:
        markets = self.markets
        return all(self.active(markets[m]) for m in self.held.get(who, ()))

    # ------------------------------------------------------------------ ledger

    def trade(self, pm: PerpMarket, buyer: int, seller: int, qty: int, amount: int) -> None:
        """Move ``qty`` from seller to buyer for ``amount`` settle units (book trades,
        insurance take-overs and ADL all come through here)."""
        self._move(pm, buyer, qty, amount)
        self._move(pm, seller, -qty, amount)

    def _move(self, pm: PerpMarket, account: int, delta: int, amount: int) -> None:
        market = pm.market
        asset = pm.settle
        book = self.positions.setdefault(market, {})
        pos = book.get(account)
        key = (account, asset)
        if pos is None:
            pos = book[account] = Position(account=account, market=market, size=0, cost=0,
                                           funding_index=pm.funding_index)
            self.held.setdefault(key, {})[market] = pos
        old = pos.size
        realized = realize(pos, delta, amount)
        ma = self.margins.get(key) or self.margin(account, asset)
        ma.collateral += realized
        pm.open_interest += (pos.size if pos.size > 0 else 0) - (old if old > 0 else 0)
        if pos.size == 0:
            del book[account]
            held = self.held[key]
            del held[market]
            if not held:
                del self.held[key]
        self.touched.add(key)

    def insurance(self, asset: str) -> MarginAccount:
        return self.margin(INSURANCE, asset)

    # ------------------------------------------------------------------ settle pass

    def begin(self) -> None:
        """Re-key (never liquidate) accounts left over from a command a guard aborted, so the
        index is sound and nothing depends on history that a snapshot would not hold."""
        self.adl_queues.clear()
        if self.touched:
            for who in sorted(self.touched):
                self.rekey(who)
            self.touched.clear()

    def settle(self, out: list[E.Event]) -> None:
        rounds = 0
        while self.touched:
            rounds += 1
            if rounds > MAX_SETTLE_ROUNDS:
                raise GuardViolation("", "settle_loop", "liquidations did not converge")
            batch = sorted(self.touched)
            self.touched.clear()
            for who in batch:
                liquidation.cover_flat_loss(self, who, out)
                cushion = self.rekey(who)
                if cushion < 0 and self.all_active(who):
                    liquidation.liquidate(self, who, out)

    def rekey(self, who: Key) -> int:
        """Recompute an account's cushion and its liquidation-index entries; returns the
        cushion (``equity - maintenance``)."""
        positions = self.held.get(who)
        ma = self.margins.get(who)
        if not positions or ma is None:
            self.liq.forget(who)
            return 0  # nothing to liquidate (a flat loss is cover_flat_loss's job)
        markets = self.markets
        base = ma.collateral
        terms: list[tuple[str, PerpMarket, Position, int, int]] = []
        total_notional = 0
        for name, pos in positions.items():
            pm = markets[name]
            mark = pm.mark
            div = pm.price_div
            size = pos.size
            n = (size if size > 0 else -size) * mark // div
            term = size * mark // div
            if n > 0:  # calc.cushion_term, inlined
                tiers = pm.tiers
                t = tiers[0] if n <= tiers[0].max_notional else tier_for(tiers, n)
                term += (t.cum_ppm - n * t.mmr_ppm) // PPM  # minus ceil(mm)
            base += term - pos.cost
            total_notional += n
            terms.append((name, pm, pos, term, n))
        cushion = base
        entries: dict[str, tuple[bool, int]] = {}
        if cushion < 0:
            for name, _, pos, _, _ in terms:
                is_long = pos.size > 0
                entries[name] = (is_long, ALWAYS_LONG if is_long else ALWAYS_SHORT)
        else:
            count = len(terms)
            for name, pm, pos, term, n in terms:
                share = (cushion * n // total_notional if total_notional
                         else cushion // count)
                entries[name] = (pos.size > 0,
                                 threshold(pm.tiers, pos.size, pm.price_div, term - share + 2))
        self.liq.set(who, entries)
        return cushion

    def rekey_market(self, pm: PerpMarket) -> None:
        for account in sorted(self.positions.get(pm.market, {})):
            self.touched.add((account, pm.settle))

    # ------------------------------------------------------------------ state

    def export(self) -> PerpState | None:
        if not self.markets and not self.margins:
            return None
        positions = [p for name in sorted(self.positions)
                     for _, p in sorted(self.positions[name].items())]
        margins = [MarginAccount(account=m.account, asset=m.asset, collateral=m.collateral,
                                 order_im=m.order_im, leverage=dict(sorted(m.leverage.items())))
                   for _, m in sorted(self.margins.items())]
        return PerpState(
            markets=[self.markets[k] for k in sorted(self.markets)],
            margins=margins,
            positions=positions,
            triggers=[self.triggers.by_id[k] for k in sorted(self.triggers.by_id)],
            reduce_only_orders=sorted(self.reduce_only),
            next_trigger_id=self.next_trigger_id,
        )

    def restore(self, state: PerpState | None) -> None:
        if state is None:
            return
        self.markets = {m.market: m for m in state.markets}
        self.margins = {(m.account, m.asset): m for m in state.margins}
        for pos in state.positions:
            self.positions.setdefault(pos.market, {})[pos.account] = pos
            settle = self.markets[pos.market].settle
            self.held.setdefault((pos.account, settle), {})[pos.market] = pos
        for t in state.triggers:
            self.triggers.add(t)
        self.reduce_only = set(state.reduce_only_orders)
        for order in self.eng.orders.values():
            pm = self.markets.get(order.market)
            if pm is not None:
                self.opened(order, pm.settle)
        self.next_trigger_id = state.next_trigger_id
        for who in sorted(self.held):
            self.rekey(who)

    def ledger_totals(self) -> dict[str, int]:
        """Per settle asset: sum(collateral) - sum(position cost). With spot balances and fees
        this must equal net deposits (``Engine.check_invariants``)."""
        totals: dict[str, int] = {}
        for (_, asset), ma in self.margins.items():
            totals[asset] = totals.get(asset, 0) + ma.collateral
        for name, book in self.positions.items():
            asset = self.markets[name].settle
            totals[asset] = totals.get(asset, 0) - sum(p.cost for p in book.values())
        return totals

    def check_invariants(self) -> list[str]:
        """O(state) audit of the perp ledger (funds conservation is checked by the engine)."""
        problems: list[str] = []
        eng = self.eng
        holds: dict[Key, int] = {}
        for order in eng.orders.values():
            pm = self.markets.get(order.market)
            if pm is None:
                continue
            key = (order.account, pm.settle)
            holds[key] = holds.get(key, 0) + order.hold
            if order.hold < 0:
                problems.append(f"order {order.order_id} negative hold {order.hold}")
            if order.order_id in self.reduce_only and order.hold:
                problems.append(f"reduce-only order {order.order_id} holds {order.hold}")
        for oid in self.reduce_only:
            if oid not in eng.orders:
                problems.append(f"reduce-only flag on closed order {oid}")
        indexed = {oid for ids in self.orders_of.values() for oid in ids}
        perp_orders = {o.order_id for o in eng.orders.values() if o.market in self.markets}
        if indexed != perp_orders:
            problems.append(f"per-account order index off by {sorted(indexed ^ perp_orders)[:5]}")
        for key, ma in self.margins.items():
            if ma.order_im != holds.get(key, 0):
                problems.append(f"margin {key} order_im {ma.order_im} != holds "
                                f"{holds.get(key, 0)}")
            if key not in self.held and ma.collateral < 0 and ma.account != INSURANCE:
                problems.append(f"flat account {key} has negative collateral {ma.collateral}")
        for name, pm in self.markets.items():
            book = self.positions.get(name, {})
            net = sum(p.size for p in book.values())
            if net:
                problems.append(f"{name}: positions net to {net}, not zero")
            oi = sum(p.size for p in book.values() if p.size > 0)
            if oi != pm.open_interest:
                problems.append(f"{name}: open interest {pm.open_interest} != longs {oi}")
            for account, pos in book.items():
                if pos.size == 0:
                    problems.append(f"{name}: empty position of {account} kept")
                if pos.funding_index != pm.funding_index:
                    problems.append(f"{name}: position {account} funding not settled")
                if self.held.get((account, pm.settle), {}).get(name) is not pos:
                    problems.append(f"{name}: position {account} missing from its account")
                if (account, pm.settle) not in self.margins:
                    problems.append(f"{name}: position {account} without a margin account")
            if eng.markets[name].kind != "perp":
                problems.append(f"{name}: perp record on a {eng.markets[name].kind} market")
        n_held = sum(len(v) for v in self.held.values())
        if n_held != sum(len(v) for v in self.positions.values()):
            problems.append("account position index disagrees with market position index")
        return problems

    def maintenance_of(self, pos: Position) -> int:
        pm = self.markets[pos.market]
        return maintenance(pm.tiers, notional(pos.size, pm.mark, pm.price_div))
