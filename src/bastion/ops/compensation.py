"""Counterfactual compensation: replay an incident window twice, as it happened and as
corrected, and diff every account.

Both replays start from the same state (the journal rebuilt at ``from_seq - 1``) and see the
same journaled commands, except where the correction drops, replaces or re-parameterises
them. Per account and asset the report gives the difference in balances, positions, realized
PnL, fees, funding paid and liquidations suffered, and what is owed: the shortfall of the
account's value (spot balance + margin collateral + unrealized PnL, both valued at the
corrected run's mark prices, i.e. the fair price) against the corrected history. Nothing here
writes anything: the live node is untouched; ``--apply`` journals credits separately.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from bastion.core import commands as C
from bastion.core import events as E
from bastion.core.codec import decode_command, decode_state, encode_state
from bastion.core.engine import Engine
from bastion.core.state import EngineState, fields_of
from bastion.journal.errors import DurabilityError
from bastion.journal.local import LocalJournal
from bastion.node.layout import DataDir
from bastion.node.recovery import rebuild
from bastion.ops.correction import Correction
from bastion.snapshots.store import SnapshotStore

#: the insurance fund's margin account: reported, never owed compensation
INSURANCE = 0
#: most commands one compensation window may replay (a bound, not a target)
MAX_WINDOW = 50_000_000


@dataclass
class Tally:
    """What happened to one account during one replay (from the events)."""

    fees: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    funding_paid: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    margin_in: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    liquidations: int = 0
    liquidated_notional: int = 0


@dataclass
class Replay:
    state: EngineState
    tallies: dict[int, Tally]
    commands: int
    dropped: int = 0
    replaced: int = 0


@dataclass
class AccountDiff:
    account: int
    liquidated: bool                      # liquidated as it happened
    liquidated_if_corrected: bool
    liquidations_suffered: int            # as it happened minus as corrected
    balances: dict[str, int]              # spot balance difference per asset (actual - fair)
    positions: dict[str, int]             # position size difference per market
    realized_pnl: dict[str, int]
    fees: dict[str, int]
    funding_paid: dict[str, int]
    value: dict[str, int]                 # actual - corrected value per asset
    owed: dict[str, int]                  # what makes the account whole (>= 0)


@dataclass
class CompensationReport:
    incident: str
    reason: str
    from_seq: int
    to_seq: int
    commands: int
    dropped: int
    replaced: int
    overrides: int
    accounts: list[AccountDiff]
    totals_owed: dict[str, int]
    insurance_fund_delta: dict[str, int]
    seconds: float
    decimals: dict[str, int] = field(default_factory=dict)

    @property
    def owed_accounts(self) -> list[AccountDiff]:
        return [a for a in self.accounts if any(v > 0 for v in a.owed.values())]

    def to_builtins(self) -> dict[str, Any]:
        out: dict[str, Any] = msgspec.to_builtins(self)
        out["owed_accounts"] = [a.account for a in self.owed_accounts]
        return out


def window(data_dir: Path, from_seq: int, to_seq: int) -> tuple[Engine, list[C.Command]]:
    """The state just before the window and the window's journaled commands (read-only; the
    node may keep running)."""
    if from_seq < 1 or to_seq < from_seq:
        raise DurabilityError(f"empty or invalid window {from_seq}..{to_seq}", code="BAD_RANGE")
    if to_seq - from_seq + 1 > MAX_WINDOW:
        raise DurabilityError(f"window over {MAX_WINDOW} commands", code="BAD_RANGE")
    layout = DataDir.at(data_dir).require()
    with LocalJournal(layout.journal, archive_dir=layout.journal_archive,
                      readonly=True) as journal:
        if to_seq > journal.last_seq:
            raise DurabilityError(f"seq {to_seq} is beyond the end of the journal "
                                  f"({journal.last_seq})", code="SEQ_BEYOND_END")
        engine, _ = rebuild(journal, SnapshotStore(layout.snapshots), from_seq - 1)
        cmds = [decode_command(p) for _, p in journal.read(from_seq, to_seq)]
    return engine, cmds


def fork(engine: Engine) -> Engine:
    """An independent copy (through the snapshot codec, so nothing is shared)."""
    return Engine.from_state(decode_state(encode_state(engine.export_state())), copy=False)


def override(engine: Engine, correction: Correction) -> None:
    """Apply the correction's parameter overrides to a replay copy (never the live state)."""
    for o in correction.override:
        targets = [t for t in (engine.markets.get(o.market),
                               engine.perp.markets.get(o.market)) if t is not None]
        if not targets:
            raise DurabilityError(f"override: unknown market {o.market!r}",
                                  code="BAD_CORRECTION")
        for name, value in o.fields.items():
            hit = [t for t in targets if name in fields_of(t)]
            current = getattr(hit[0], name) if hit else None
            if not hit or type(current) is not type(value):
                raise DurabilityError(f"override: {o.market} has no {type(value).__name__} "
                                      f"parameter {name!r}", code="BAD_CORRECTION")
            for t in hit:
                setattr(t, name, value)


def replay(engine: Engine, cmds: list[C.Command], correction: Correction | None) -> Replay:
    tallies: dict[int, Tally] = defaultdict(Tally)
    quote = {m: mk.quote for m, mk in engine.markets.items()}
    dropped = replaced = 0
    for original in cmds:
        cmd = original
        if correction is not None:
            corrected = correction.apply(original)
            if corrected is None:
                dropped += 1
                continue
            replaced += corrected is not original
            cmd = corrected
        before = _funding_positions(engine, cmd) if type(cmd) is C.FundingTick else None
        events = engine.apply(cmd)
        if type(cmd) in (C.CreateMarket, C.CreatePerpMarket):
            quote = {m: mk.quote for m, mk in engine.markets.items()}
        _tally(tallies, events, quote, before)
    return Replay(engine.export_state(), tallies, len(cmds), dropped, replaced)


def _funding_positions(engine: Engine, cmd: C.Command) -> tuple[str, int, int, list[Any]] | None:
    """Before a funding tick: the market's index and every position's size. Funding accrued
    by the tick is size x index move, whether the core settles it at once or lazily."""
    market = getattr(cmd, "market", "")
    pm = engine.perp.markets.get(market)
    if pm is None:
        return None
    positions = [(p.account, p.size) for p in engine.perp.positions.get(market, {}).values()]
    return pm.settle, pm.price_div, pm.funding_index, positions


def _tally(tallies: dict[int, Tally], events: list[E.Event], quote: dict[str, str],
           funding: tuple[str, int, int, list[Any]] | None) -> None:
    for ev in events:
        if isinstance(ev, E.Trade):
            asset = quote[ev.market]
            tallies[ev.maker_account].fees[asset] += ev.maker_fee
            tallies[ev.taker_account].fees[asset] += ev.taker_fee
        elif isinstance(ev, E.Liquidated):
            t = tallies[ev.account]
            t.liquidated_notional += ev.notional
            t.fees[quote[ev.market]] += ev.fee
        elif isinstance(ev, E.LiquidationStarted):
            tallies[ev.account].liquidations += 1
        elif isinstance(ev, E.MarginTransferred):
            tallies[ev.account].margin_in[ev.asset] += ev.delta
        elif isinstance(ev, E.FundingSettled) and funding is not None and not ev.paused:
            settle, price_div, index, positions = funding
            for account, size in positions:
                tallies[account].funding_paid[settle] += _owed(size, ev.index - index, price_div)


def _owed(size: int, moved: int, price_div: int) -> int:
    """Funding a position of ``size`` owes for an index move (payers round up)."""
    return -(-(size * moved) // (price_div * 1_000_000_000))


@dataclass
class _Book:
    """One account's holdings in one replay's final state."""

    spot: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    collateral: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    positions: dict[str, tuple[int, int, int]] = field(default_factory=dict)


def _books(state: EngineState) -> dict[int, _Book]:
    books: dict[int, _Book] = defaultdict(_Book)
    for acct in state.accounts:
        for asset, amount in acct.available.items():
            books[acct.account].spot[asset] += amount
        for asset, amount in acct.held.items():
            books[acct.account].spot[asset] += amount
    if state.perp is not None:
        for ma in state.perp.margins:
            books[ma.account].collateral[ma.asset] += ma.collateral
        for p in state.perp.positions:
            books[p.account].positions[p.market] = (p.size, p.cost, p.funding_index)
    return books


def _marks(state: EngineState) -> dict[str, tuple[str, int, int, int]]:
    if state.perp is None:
        return {}
    return {m.market: (m.settle, m.price_div, m.mark, m.funding_index)
            for m in state.perp.markets}


def _value(book: _Book, marks: dict[str, tuple[str, int, int, int]],
           indexes: dict[str, int]) -> dict[str, int]:
    """Spot + collateral + unrealized PnL at the fair marks - funding not yet settled (at the
    run's own funding index)."""
    value: dict[str, int] = defaultdict(int)
    for asset, amount in book.spot.items():
        value[asset] += amount
    for asset, amount in book.collateral.items():
        value[asset] += amount
    for market, (size, cost, index) in book.positions.items():
        settle, div, mark, _ = marks[market]
        value[settle] += size * mark // div - cost - _owed(size, indexes[market] - index, div)
    return value


def _sub(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    keys = sorted(set(a) | set(b))
    return {k: a.get(k, 0) - b.get(k, 0) for k in keys if a.get(k, 0) != b.get(k, 0)}


def diff(start: EngineState, actual: Replay, fair: Replay) -> list[AccountDiff]:
    start_books, a_books, f_books = _books(start), _books(actual.state), _books(fair.state)
    fair_marks = _marks(fair.state)
    a_index = {m: v[3] for m, v in _marks(actual.state).items()}
    f_index = {m: v[3] for m, v in fair_marks.items()}
    a_liq = {k for k, t in actual.tallies.items() if t.liquidations}
    f_liq = {k for k, t in fair.tallies.items() if t.liquidations}
    out: list[AccountDiff] = []
    for account in sorted(set(a_books) | set(f_books)):
        a, f, s = a_books[account], f_books[account], start_books[account]
        ta, tf = actual.tallies.get(account, Tally()), fair.tallies.get(account, Tally())
        value = _sub(_value(a, fair_marks, a_index), _value(f, fair_marks, f_index))
        sizes_a = {m: v[0] for m, v in a.positions.items()}  # size, cost, funding index
        sizes_f = {m: v[0] for m, v in f.positions.items()}
        entry = AccountDiff(
            account=account, liquidated=account in a_liq,
            liquidated_if_corrected=account in f_liq,
            liquidations_suffered=ta.liquidations - tf.liquidations,
            balances=_sub(a.spot, f.spot), positions=_sub(sizes_a, sizes_f),
            realized_pnl=_sub(_realized(a, s, ta), _realized(f, s, tf)),
            fees=_sub(dict(ta.fees), dict(tf.fees)),
            funding_paid=_sub(dict(ta.funding_paid), dict(tf.funding_paid)),
            value=value,
            owed={k: -v for k, v in value.items() if v < 0 and account != INSURANCE})
        if any((entry.balances, entry.positions, entry.realized_pnl, entry.fees,
                entry.funding_paid, entry.value, entry.liquidations_suffered)):
            out.append(entry)
    return out


def _realized(end: _Book, start: _Book, t: Tally) -> dict[str, int]:
    """Collateral change not explained by transfers, fees or funding."""
    assets = set(end.collateral) | set(start.collateral)
    return {a: end.collateral.get(a, 0) - start.collateral.get(a, 0) - t.margin_in.get(a, 0)
            + t.fees.get(a, 0) + t.funding_paid.get(a, 0) for a in assets}


def compensate(data_dir: Path, from_seq: int, to_seq: int,
               correction: Correction) -> CompensationReport:
    t0 = time.perf_counter()
    start, cmds = window(data_dir, from_seq, to_seq)
    start_state = fork(start).export_state()
    corrected_engine = fork(start)
    override(corrected_engine, correction)
    actual = replay(start, cmds, None)
    fair = replay(corrected_engine, cmds, correction)
    accounts = diff(start_state, actual, fair)
    totals: dict[str, int] = defaultdict(int)
    for a in accounts:
        for asset, amount in a.owed.items():
            totals[asset] += amount
    fund = next((a.value for a in accounts if a.account == INSURANCE), {})
    return CompensationReport(
        incident=correction.incident, reason=correction.reason, from_seq=from_seq,
        to_seq=to_seq, commands=len(cmds), dropped=fair.dropped, replaced=fair.replaced,
        overrides=len(correction.override), accounts=accounts, totals_owed=dict(totals),
        insurance_fund_delta=dict(fund), seconds=time.perf_counter() - t0,
        decimals={a.asset: a.decimals for a in start_state.assets})
