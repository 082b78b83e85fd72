"""The engine: a single-threaded, deterministic state machine over commands.

The pipeline, in one place (``Engine.apply``):
  1. sequence: ``seq``/``ts`` must increase, else one ``Rejected`` and nothing else;
  2. timed changes due at this ``ts`` (the end of ``recovery``, a migration's scheduled steps);
  3. dispatch: ``HANDLERS[type(cmd)]`` validates everything, then mutates (``Refused`` before
     any change becomes the command's one ``Rejected`` event);
  4. settle pass: margin accounts the command touched (and a few whose funding allowance a
     tick half used, ``MarginLedger.recheck_soft``) are re-keyed for liquidation and, below
     maintenance, liquidated (``perp.liquidation.settle``);
  5. guards: a broken invariant (``GuardViolation``) or a defect halts the market with a
     ``GuardTripped`` event instead of acting on bad state. ``apply`` never raises.

Adding a command: define it in ``commands.py`` (and its events in ``events.py``), write a
handler ``def handle(v: Venue, cmd: C.MyCommand, out: list[E.Event]) -> None`` in the module
that owns the job (validate everything, then mutate; refuse with ``rules.Refused``), and add
one line to ``HANDLERS`` below (or call ``register``).
"""

from collections.abc import Callable
from hashlib import blake2b
from typing import Any, Final

import msgspec

from bastion.core import accounts, cancels, credits, markets, migrations, orders
from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.book import OrderBook
from bastion.core.ledger.margin import MarginLedger
from bastion.core.ledger.spot import SpotLedger
from bastion.core.orders import K_SEQ, K_TS, P_SEQ, P_TS, Fields, fields_of
from bastion.core.perp import accounts as margin_accounts
from bastion.core.perp import funding, liquidation, oracle, triggers_cmd
from bastion.core.perp import market as perp_market
from bastion.core.rules import GuardViolation, Refused
from bastion.core.state import (
    STATE_VERSION,
    CreditKey,
    EngineState,
    OrderState,
    account_record,
    account_state,
    market_record,
    market_state,
    order_record,
    order_state,
)
from bastion.core.venue import DENSE_ACCOUNTS, Venue
from bastion.core.wallet.desk import COMMANDS as WALLET_COMMANDS
from bastion.core.wallet.desk import Wallet, WalletHandler

#: bound here (``Final``): compiled code reads them without a module attribute lookup
PlaceOrder: Final = C.PlaceOrder
CancelOrder: Final = C.CancelOrder


class SnapshotVersionError(ValueError):
    """A snapshot written in another state format: refused rather than misread."""


class Engine(Venue):
    def __init__(self) -> None:
        super().__init__()
        self.spot = SpotLedger(self)
        #: perpetual markets: cross margin, positions, oracle and funding records, triggers
        self.perp = MarginLedger(self)
        self.ledgers = {"spot": self.spot, "perp": self.perp}
        #: withdrawals (held funds, the journaled state machine) and deposits
        self.wallet = Wallet(self)

    def apply(self, cmd: C.Command) -> list[E.Event]:
        """Apply one sequenced command; returns its events. Never raises."""
        raw: Any = cmd  # an in-process command may carry any type; compiled code would trust it
        kind = type(cmd)
        fields: Fields | None = None
        if kind is PlaceOrder:  # the two hot commands: all fields read in one call
            fields = fields_of(cmd)
            seq = fields[P_SEQ]
            ts = fields[P_TS]
        elif kind is CancelOrder:
            fields = fields_of(cmd)
            seq = fields[K_SEQ]
            ts = fields[K_TS]
        else:
            seq = raw.seq
            ts = raw.ts
        in_order = False
        if type(seq) is int and type(ts) is int:
            n_seq: int = seq  # compared natively
            n_ts: int = ts
            in_order = n_seq > self.seq and n_ts >= self.ts
        if not in_order:
            return [
                E.Rejected(
                    seq=seq if type(seq) is int else 0,
                    ts=ts if type(ts) is int else 0,
                    code=X.SEQUENCE,
                    message=f"command seq/ts must increase past seq={self.seq} ts={self.ts}",
                    command=type(cmd).__name__,
                )
            ]
        self.seq = n_seq
        self.ts = n_ts
        self.seq_box = seq
        self.ts_box = ts
        out: list[E.Event] = []
        if n_ts >= self.deadline:
            markets.end_recovery(self, out)
            migrations.run_due(self, out)
        perp = self.perp
        try:
            if fields is None:
                handler = HANDLERS.get(kind)
                if handler is None:
                    raise Refused(X.INVALID_ARGUMENT, f"unknown command {kind.__name__}")
                handler(self, cmd, out)
            elif kind is PlaceOrder:
                orders.place_fields(self, raw, fields, out)
            else:
                orders.cancel_fields(self, fields, out)
            if perp.soft_markets:
                perp.recheck_soft()
            if perp.touched:
                liquidation.settle(perp, out)
        except Refused as r:
            out.append(
                E.Rejected(
                    seq=seq,
                    ts=ts,
                    code=r.code,
                    message=r.message,
                    command=type(cmd).__name__,
                    account=_account_of(cmd),
                    client_id=_client_id_of(cmd),
                    field=r.field,
                    limit=r.limit,
                    value=r.value,
                )
            )
            perp.rekey_touched()
        except GuardViolation as g:
            self.trip(g.market, g.guard, g.detail, out)
            perp.rekey_touched()
        except Exception as exc:  # a defect: stop the market rather than continue on bad state
            market = getattr(cmd, "market", "")
            self.trip(market if isinstance(market, str) else "", "internal", repr(exc), out)
            out.append(
                E.Rejected(seq=seq, ts=ts, code=X.INTERNAL_ERROR, message=repr(exc),
                           command=type(cmd).__name__)
            )
            perp.rekey_touched()
        return out

    # ------------------------------------------------------------------ state

    def export_state(self) -> EngineState:
        """The complete state in a canonical order (hash input and snapshot payload)."""
        orders_: list[OrderState] = []
        for name in sorted(self.books):
            book = self.books[name]
            orders_.extend(order_state(o) for o in book.bids.orders_in_priority())
            orders_.extend(order_state(o) for o in book.asks.orders_in_priority())
        accounts_ = [account_state(a) for _, a in sorted(self.accounts.items())]
        return EngineState(
            version=STATE_VERSION, seq=self.seq, ts=self.ts, next_order_id=self.next_order_id,
            next_trade_id=self.next_trade_id,
            assets=[self.assets[k] for k in sorted(self.assets)],
            markets=[market_state(self.markets[k]) for k in sorted(self.markets)],
            accounts=accounts_, orders=orders_, fees=dict(sorted(self.fees.items())),
            net_deposits=dict(sorted(self.net_deposits.items())),
            perp=self.perp.export(),
            wallet=self.wallet.export(),
            migrations=self.migrations if self.migrations.records else None,
            credited=[CreditKey(*k) for k in sorted(self.credited)],
        )

    @classmethod
    def from_state(cls, state: EngineState, *, copy: bool = True) -> "Engine":
        """Rebuild an engine; continuing from it equals never having stopped.

        ``export_state`` shares records with the live engine, so by default the state is
        deep-copied first; a freshly decoded snapshot can be adopted as is (``copy=False``),
        which saves seconds on a large book. A snapshot in another state format is refused
        (``SnapshotVersionError``): rebuild it by replaying the journal instead."""
        if state.version != STATE_VERSION:
            raise SnapshotVersionError(
                f"snapshot state format {state.version} is not this engine's "
                f"{STATE_VERSION}: rebuild the state by replaying the journal")
        eng = cls()
        if copy:
            state = msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=EngineState)
        eng.seq, eng.ts = state.seq, state.ts
        eng.seq_box, eng.ts_box = state.seq, state.ts
        eng.next_order_id, eng.next_trade_id = state.next_order_id, state.next_trade_id
        eng.assets = {a.asset: a for a in state.assets}
        eng.markets = {m.market: market_record(m) for m in state.markets}
        eng.books = {m.market: OrderBook(m.market) for m in state.markets}
        for a in state.accounts:
            eng.add_account(account_record(a))
        for record in state.orders:
            order = order_record(record)
            eng.orders[order.order_id] = order
            if order.client_id:
                eng.client_ids.setdefault(order.account, {})[order.client_id] = order.order_id
            eng.books[order.market].side(order.side == "buy").add(order)
        eng.fees = state.fees
        eng.net_deposits = state.net_deposits
        eng.credited = {(k.incident, k.account, k.asset) for k in state.credited}
        if state.migrations is not None:
            eng.migrations = state.migrations
        eng.recompute_deadline()
        eng.perp.restore(state.perp)
        if state.wallet is not None:
            eng.wallet.restore(state.wallet)
        return eng

    def state_hash(self) -> str:
        return blake2b(msgspec.msgpack.encode(self.export_state()), digest_size=32).hexdigest()

    def check_invariants(self) -> list[str]:
        """Full O(state) audit: funds conserved per asset, each ledger's own records (holds,
        positions), books uncrossed and FIFO. Tests and operators call it; the hot path checks
        the cheap local forms of the same rules."""
        problems: list[str] = []
        totals: dict[str, int] = {}
        for led in self.ledgers.values():
            problems.extend(led.audit())
            for asset, amount in led.totals().items():
                totals[asset] = totals.get(asset, 0) + amount
        problems.extend(self.wallet.check_invariants())
        for n, acct in enumerate(self.account_list):
            if acct is not None and self.accounts.get(n) is not acct:
                problems.append(f"account {n}: its dense index entry is not its record")
        for n, acct in self.accounts.items():
            if 0 <= n < DENSE_ACCOUNTS and (n >= len(self.account_list)
                                            or self.account_list[n] is not acct):
                problems.append(f"account {n}: missing from the dense account index")
        for asset, amount in self.wallet.held_totals().items():
            totals[asset] = totals.get(asset, 0) + amount  # held for pending withdrawals
        for asset in set(totals) | set(self.net_deposits) | set(self.fees):
            have = totals.get(asset, 0) + self.fees.get(asset, 0)
            if have != self.net_deposits.get(asset, 0):
                problems.append(f"{asset}: balances + fees = {have}, net deposits = "
                                f"{self.net_deposits.get(asset, 0)}")
        for name, book in self.books.items():
            if book.is_crossed():
                problems.append(f"{name} crossed: {book.bids.best()} >= {book.asks.best()}")
            for side in (book.bids, book.asks):
                for price, level in side.levels.items():
                    live = level.live_orders()
                    if [o.ts for o in live] != sorted(o.ts for o in live):
                        problems.append(f"{name} level {price} not FIFO")
                    if sum(o.remaining for o in live) != level.qty or len(live) != level.count:
                        problems.append(f"{name} level {price} totals disagree")
                    if not live:
                        problems.append(f"{name} empty level {price} kept")
        return problems


Handler = Callable[[Engine, Any, list[E.Event]], object]


def _on_margin(fn: Callable[[MarginLedger, Any, list[E.Event]], None]) -> Handler:
    """A perpetual-mechanics handler works on the margin ledger."""
    def handler(eng: Engine, cmd: Any, out: list[E.Event]) -> None:
        fn(eng.perp, cmd, out)
    return handler


def _on_wallet(fn: WalletHandler) -> Handler:
    """A withdrawal or deposit handler works on the wallet."""
    def handler(eng: Engine, cmd: Any, out: list[E.Event]) -> None:
        fn(eng.wallet, cmd, out)
    return handler


#: command type -> handler: the one dispatch table.
HANDLERS: Final[dict[type, Handler]] = {
    # order lifecycle (every market kind)
    C.PlaceOrder: orders.place_order,
    C.CancelOrder: orders.cancel,
    C.AmendOrder: orders.amend,
    C.CancelAll: orders.cancel_all,
    # accounts
    C.Deposit: accounts.deposit,
    C.Withdraw: accounts.withdraw,
    C.AdjustBalance: accounts.adjust,
    C.SetAccountSTP: accounts.set_stp,
    # assets, markets, modes
    C.CreateAsset: markets.create_asset,
    C.CreateMarket: markets.create_market,
    C.UpdateMarket: markets.update_market,
    C.SetReferencePrice: markets.set_ref_price,
    C.SetMarketMode: markets.set_mode,
    C.ApplyMigration: migrations.apply_migration,
    C.RollbackMigration: migrations.rollback_migration,
    # perpetual mechanics
    C.CreatePerpMarket: _on_margin(perp_market.create_perp_market),
    C.UpdateIndex: _on_margin(oracle.update_index),
    C.ResetOracle: _on_margin(oracle.reset_oracle),
    C.FundingTick: _on_margin(funding.funding_tick),
    C.AddMargin: _on_margin(margin_accounts.add_margin),
    C.RemoveMargin: _on_margin(margin_accounts.remove_margin),
    C.SetLeverage: _on_margin(margin_accounts.set_leverage),
    C.FundInsurance: _on_margin(margin_accounts.fund_insurance),
    C.PlaceTrigger: _on_margin(triggers_cmd.place_trigger),
    C.CancelTrigger: _on_margin(triggers_cmd.cancel_trigger),
    # withdrawals and deposits (core/wallet)
    **{command: _on_wallet(fn) for command, fn in WALLET_COMMANDS.items()},
    # operator kit: mass cancel with filters, compensation
    C.CancelOrders: cancels.cancel_orders,
    C.Credit: credits.credit_cmd,
}


def register(command: type, handler: Handler) -> None:
    """Add a command's handler to the dispatch table (once per command type)."""
    assert issubclass(command, C.Command) and command not in HANDLERS, command
    HANDLERS[command] = handler


def _account_of(cmd: object) -> int:
    account = getattr(cmd, "account", 0)
    return account if type(account) is int else 0


def _client_id_of(cmd: object) -> str:
    client_id = getattr(cmd, "client_id", "")
    return client_id if isinstance(client_id, str) else ""
