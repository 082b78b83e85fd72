"""The gateway's one door to the node: turns API intents into journaled commands, answers from
the engine and the read model, and fans applied events out to subscribers.

Every state change goes through ``node.submit`` and is answered only after the node journaled
and applied it, so an acknowledged order survives a crash. Reads never touch the journal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bastion import acktrace
from bastion.api import errors as A
from bastion.api.errors import ApiError
from bastion.api.read.checkpoint import Checkpoints, PeriodicCheckpoints, Restorer
from bastion.api.read.model import OrderRecord, ReadModel
from bastion.api.service.outcomes import CanceledAll, Changed, MarginChanged, Placed, Withdrawn
from bastion.api.service.rejections import api_error
from bastion.api.ws.marketdata import BookFeed
from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.codec import decode_command
from bastion.core.engine import Engine
from bastion.core.state import Market

if TYPE_CHECKING:
    from bastion.api.metrics import Metrics
    from bastion.node.node import Node

log = logging.getLogger("bastion.api")

EventListener = Callable[[list[E.Event], list[Any]], None]


class Gateway:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.readmodel = ReadModel(lambda: self.node.engine)
        self.books = BookFeed()
        self._listeners: list[EventListener] = []
        self._mode_observers: list[Callable[[E.ModeChanged], None]] = []
        self._inflight: dict[tuple[int, str], asyncio.Future[None] | None] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self.started_at = time.monotonic()
        self.ops = 0
        #: counts commands by type and outcome and times their acks (``/metrics``)
        self.meter: Metrics | None = None
        #: the per-order stage trace, when on (``bastion.acktrace``)
        self.trace = acktrace.TRACE
        #: writes the read model's checkpoints between node snapshots (set by ``attach``)
        self.checkpointer: PeriodicCheckpoints | None = None
        self._term = 0
        self._journal: Any = None

    @property
    def engine(self) -> Engine:
        return self.node.engine

    # ------------------------------------------------------------------ wiring

    def attach(self, restorer: Restorer | None = None,
               checkpoints: Checkpoints | None = None, checkpoint_every: int = 0,
               collapse_min_rss_mb: int | None = None,
               checkpoint_min_seconds: float = 0.0) -> None:
        """Bring the read model to the node's seq, load book mirrors, then follow the live
        event stream. Runs before any request is served.

        The read model comes from its newest checkpoint at or after the node's snapshot plus
        the tail the node replayed (``restorer``); without a usable checkpoint it is rebuilt
        by replaying the journal from seq 1 through a scratch engine (checked against the
        node's state hash). With ``checkpoints``, every later node snapshot writes one, and
        with ``checkpoint_every`` a forked child also writes one every that many commands;
        ``collapse_min_rss_mb``: collapse the heap into huge pages before such a fork above
        this size (0: never; None: as the node's snapshots do); ``checkpoint_min_seconds``: at
        least this long between two of those forks."""
        t0 = time.perf_counter()
        engine = self.engine
        target = engine.seq
        journal = getattr(self.node, "journal", None)
        term_at = getattr(journal, "term_at", None)
        report = getattr(self.node, "recovery", None)
        known = (report.snapshot_seq, report.snapshot_term) if report is not None else None
        why = (restorer.usable(target, term_at, known) if restorer is not None
               else "no checkpoint")
        if why is None and restorer is not None and restorer.restored is not None:
            restored = restorer.restored
            restored._engine = lambda: self.node.engine
            self.readmodel = restored
            how = (f"restored from its checkpoint at seq {restorer.base_seq} "
                   f"({restorer.seconds:.3f} s) + {restorer.tail} commands the node replayed")
        else:
            if restorer is not None and restorer.checkpoint is not None:
                log.warning("read-model checkpoint not used: %s", why)
            how = self._replay_all(engine, target)
        rm = self.readmodel
        rm.sync_positions(engine, {a for a, _ in rm.positions}
                          | {a for book in engine.perp.positions.values() for a in book})
        rm.touched.clear()
        rm.touched_accounts.clear()
        rm.touched_positions.clear()
        self.books.load(engine)
        self._unsubscribe = self.node.subscribe(self._on_events)
        hooks = getattr(self.node, "snapshot_hooks", None)
        if checkpoints is not None and hooks is not None and term_at is not None:
            # the term at the read model's seq, kept in memory: a forked child must not read
            # the journal (another thread may hold its lock at the fork)
            self._term = term_at(target)
            self._journal = journal
            config = getattr(self.node, "config", None)
            periodic = PeriodicCheckpoints(
                checkpoints, checkpoint_every,
                getattr(config, "hugepage_collapse_min_rss_mb", 0)
                if collapse_min_rss_mb is None else collapse_min_rss_mb,
                checkpoint_min_seconds)
            periodic.last_seq = target
            self.checkpointer = periodic

            def on_snapshot(seq: int) -> None:  # in the node's snapshot child, at our seq
                checkpoints.write(self.readmodel, seq, self._term)

            hooks.append(on_snapshot)
        log.info("read model %s; ready in %.3f s", how, time.perf_counter() - t0)

    def _replay_all(self, engine: Engine, target: int) -> str:
        journal = self.node.journal
        if not target:
            return "empty"
        if journal.first_seq > 1:
            self.readmodel.seed_open_orders(engine)
            return "seeded with open orders (the journal's beginning is archived)"
        scratch = Engine()
        rm = self.readmodel
        for _seq, payload in journal.read(1, target):
            rm.apply(scratch.apply(decode_command(payload)))
        if scratch.state_hash() != engine.state_hash():
            log.error("read model replay diverged from the node's state; history may be "
                      "incomplete (open orders are reseeded from the engine)")
            self.readmodel = ReadModel(lambda: self.node.engine)
            self.readmodel.seed_open_orders(engine)
        return f"rebuilt by replaying {target} journaled commands"

    def detach(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.checkpointer is not None:
            self.checkpointer.close()

    def add_listener(self, listener: EventListener) -> None:
        """``listener(events, book_deltas)`` after the read model absorbed a batch."""
        self._listeners.append(listener)

    def on_mode_change(self, observer: Callable[[E.ModeChanged], None]) -> None:
        self._mode_observers.append(observer)

    def _on_events(self, events: list[E.Event]) -> None:
        rm = self.readmodel
        rm.apply(events)
        if rm.touched_positions:
            rm.sync_positions(self.engine, rm.touched_positions)
        deltas = self.books.update(self.engine, rm.touched) if rm.touched else []
        rm.touched.clear()
        for listener in self._listeners:
            try:
                listener(events, deltas)
            except Exception:
                log.exception("event listener failed")
        rm.touched_accounts.clear()
        rm.touched_positions.clear()
        if self.checkpointer is not None:
            self._term = self._journal.epoch  # what this batch's records were written under
            self.checkpointer.after_batch(rm, self.engine.seq, self._term)
        if self._mode_observers:
            for ev in events:
                if type(ev) is E.ModeChanged:
                    for obs in self._mode_observers:
                        try:
                            obs(ev)
                        except Exception:
                            log.exception("mode observer failed")

    # ------------------------------------------------------------------ lookups

    def market(self, name: str) -> Market:
        mkt = self.engine.markets.get(name)
        if mkt is None:
            raise ApiError(X.UNKNOWN_MARKET, f"unknown market {name!r}")
        return mkt

    def asset_decimals(self, asset: str) -> int:
        a = self.engine.assets.get(asset)
        if a is None:
            raise ApiError(X.UNKNOWN_ASSET, f"unknown asset {asset!r}")
        return a.decimals

    # ------------------------------------------------------------------ commands

    async def submit(self, cmd: C.Command) -> list[E.Event]:
        """Journal and apply one command; a refusal becomes an ``ApiError`` with the core code."""
        meter = self.meter
        trace = self.trace
        if trace is not None:
            received, trace.received = trace.received, 0
            submitted = acktrace.now()
        t0 = time.perf_counter()
        try:
            events = await self.node.submit(cmd)
        except Exception as exc:  # node stopped, closing, journal failure
            if meter is not None:
                meter.command(type(cmd), "unavailable", 0.0)
            code = getattr(exc, "code", "")
            raise ApiError(A.UNAVAILABLE, f"the exchange is not accepting commands right now "
                                          f"({code or type(exc).__name__})",
                           headers={"Retry-After": "1"}) from exc
        if trace is not None:
            trace.orders.append((getattr(cmd, "client_id", "") or "", cmd.seq,
                                 received or submitted, submitted, acktrace.now()))
        self.ops += 1
        for ev in events:
            if type(ev) is E.Rejected:
                if meter is not None:
                    meter.command(type(cmd), "rejected", time.perf_counter() - t0)
                    meter.rejections.labels(ev.code).inc()
                raise api_error(ev, self.engine, cmd)
        if meter is not None:
            meter.command(type(cmd), "accepted", time.perf_counter() - t0)
        return events

    async def place(self, cmd: C.PlaceOrder) -> Placed:
        """Place an order; a client id already used by this account answers with that order
        (``duplicate=True``) instead of placing a second one. Every surface's order entry
        (native REST and WebSocket, Binance spot and USD-M) comes here with the command
        parsed, and renders the outcome."""
        account = cmd.account
        cid = cmd.client_id
        rm = self.readmodel
        if not cid:
            events = await self.submit(cmd)
            return Placed(self._accepted(events), False, events)
        key = (account, cid)
        inflight = self._inflight
        while True:
            rec = rm.order_by_client(account, cid)
            if rec is not None:
                return Placed(rec, True, [])
            if key not in inflight:
                break
            # the same client id is being placed: wait for it (the future is made only by
            # such a second request; the first marks its key with None)
            pending = inflight[key]
            if pending is None:
                pending = inflight[key] = asyncio.get_running_loop().create_future()
            await asyncio.shield(pending)
        inflight[key] = None
        try:
            events = await self.submit(cmd)
        except ApiError as err:
            if err.code == X.DUPLICATE_CLIENT_ID:
                rec = rm.order_by_client(account, cid)
                if rec is not None:
                    return Placed(rec, True, [])
            raise
        finally:
            waiters = inflight.pop(key)
            if waiters is not None:
                waiters.set_result(None)
        return Placed(self._accepted(events), False, events)

    def _accepted(self, events: list[E.Event]) -> OrderRecord:
        for ev in events:
            if type(ev) is E.OrderAccepted:
                rec = self.readmodel.orders.get(ev.order_id)
                if rec is not None:
                    return rec
        raise ApiError(X.INTERNAL_ERROR, "order accepted but not found in the read model")

    def own_order(self, account: int, order_id: int | None = None,
                  client_id: str | None = None) -> OrderRecord:
        """The account's order by id or client id; another account's order is reported
        exactly like a missing one (no existence oracle)."""
        rm = self.readmodel
        rec = None
        if order_id is not None:
            rec = rm.order(account, order_id)
        elif client_id:
            rec = rm.order_by_client(account, client_id)
        if rec is None:
            raise ApiError(X.UNKNOWN_ORDER, f"no order {order_id or client_id!r} for this "
                                            "account")
        return rec

    async def cancel(self, account: int, order_id: int | None = None,
                     client_id: str | None = None, market: str | None = None) -> Changed:
        rec = self.own_order(account, order_id, client_id)
        if market is not None and rec.market != market:
            raise ApiError(X.UNKNOWN_ORDER, f"order {rec.order_id} is not in {market}")
        if not rec.is_open:
            raise ApiError(X.UNKNOWN_ORDER, f"order {rec.order_id} is already {rec.status}")
        events = await self.submit(C.CancelOrder(account=account, market=rec.market,
                                                 order_id=rec.order_id))
        return Changed(rec, events)  # the read model applied the events to ``rec``

    async def amend(self, account: int, order_id: int | None, client_id: str | None,
                    new_price: int | None, new_qty: int | None) -> Changed:
        rec = self.own_order(account, order_id, client_id)
        if not rec.is_open:
            raise ApiError(X.UNKNOWN_ORDER, f"order {rec.order_id} is already {rec.status}")
        events = await self.submit(C.AmendOrder(account=account, market=rec.market,
                                                order_id=rec.order_id, new_price=new_price,
                                                new_qty=new_qty))
        return Changed(rec, events)

    async def cancel_all(self, account: int, market: str | None = None) -> CanceledAll:
        if market is not None:
            self.market(market)
        if account not in self.engine.accounts:
            return CanceledAll([], [])
        try:
            events = await self.submit(C.CancelAll(account=account, market=market or ""))
        except ApiError as err:
            if err.code == X.UNKNOWN_ORDER:
                return CanceledAll([], [])
            raise
        orders = self.readmodel.orders
        return CanceledAll([orders[ev.order_id] for ev in events
                            if type(ev) is E.OrderCanceled and ev.order_id in orders], events)

    async def transfer_margin(self, account: int, asset: str, amount: int, add: bool
                              ) -> MarginChanged:
        """Move ``amount`` (the asset's units) from the spot wallet into cross margin, or back
        with ``add=False``."""
        cmd: C.Command = (C.AddMargin(account=account, asset=asset, amount=amount) if add
                          else C.RemoveMargin(account=account, asset=asset, amount=amount))
        events = await self.submit(cmd)
        return MarginChanged(account, asset, self.engine.perp.margins.get((account, asset)), 0,
                             events)

    async def set_leverage(self, account: int, market: str, leverage: int,
                           same_is_ok: bool = False) -> MarginChanged:
        """Set the account's leverage in a perpetual market; with ``same_is_ok`` the leverage
        already in force answers as set (no events) instead of ``NO_CHANGE``."""
        pm = self.engine.perp.markets.get(market)
        if pm is None:
            raise ApiError(X.NOT_PERP, f"{market} is not a perpetual market")
        try:
            events = await self.submit(C.SetLeverage(account=account, market=market,
                                                     leverage=leverage))
        except ApiError as err:
            if not (same_is_ok and err.code == X.NO_CHANGE):
                raise
            events = []
        for ev in events:
            if type(ev) is E.LeverageChanged:
                leverage = ev.leverage
        return MarginChanged(account, pm.settle,
                             self.engine.perp.margins.get((account, pm.settle)), leverage,
                             events)

    async def withdraw(self, account: int, asset: str, amount: int, address: str,
                       client_id: str) -> Withdrawn:
        """Journal a withdrawal request; a client id this account already used answers with
        that withdrawal (``duplicate=True``) and holds nothing more."""
        wallet = self.engine.wallet
        wid = wallet.client_ids.get((account, client_id)) if client_id else None
        if wid is not None:
            return Withdrawn(wallet.withdrawals[wid], True, [])
        try:
            events = await self.submit(C.RequestWithdrawal(
                account=account, asset=asset, amount=amount, address=address,
                client_id=client_id))
        except ApiError as err:
            wid = wallet.client_ids.get((account, client_id)) if client_id else None
            if err.code == X.DUPLICATE_CLIENT_ID and wid is not None:
                return Withdrawn(wallet.withdrawals[wid], True, [])
            raise
        wid = next(ev.wid for ev in events if type(ev) is E.WithdrawalUpdated)
        return Withdrawn(wallet.withdrawals[wid], False, events)
