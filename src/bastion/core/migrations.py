"""Metadata migrations in the core: ``ApplyMigration`` checks every change against the live
state first (naming the change and field at fault), then applies all of it or nothing, and
records it under its id with the markets as they were; ``RollbackMigration`` puts those back;
timed steps (a fee holiday's end, a mode window) run at the first command stamped at or after
their time, so a replay runs them at exactly the same point.
"""

from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.core import markets
from bastion.core import migration_spec as S
from bastion.core.errors import MAX_INT
from bastion.core.instruments import validate_market
from bastion.core.records import Order
from bastion.core.rules import Refused
from bastion.core.state import (
    Market,
    MarketState,
    MigrationLog,
    MigrationRecord,
    ScheduledStep,
    market_state,
)
from bastion.core.venue import Venue

MIGRATION_APPLIED = "MIGRATION_APPLIED"
MIGRATION_CONFLICT = "MIGRATION_CONFLICT"
UNKNOWN_MIGRATION = "UNKNOWN_MIGRATION"
NEVER = 2**63
CANCEL_REASON = "MIGRATION"
MAX_CHANGES = 256
SHOWN_CONFLICTS = 5
#: metadata fields a migration may change and a rollback restores
META_FIELDS = markets.UPDATABLE


class _Plan:
    """Everything a migration will do, computed without touching the engine."""

    def __init__(self) -> None:
        self.assets: list[C.CreateAsset] = []
        self.markets: list[C.CreateMarket] = []
        self.views: dict[str, Market] = {}
        self.cancel: dict[int, str] = {}
        self.modes_now: list[C.SetMarketMode] = []
        self.delist: list[C.SetMarketMode] = []
        self.schedule: list[ScheduledStep] = []


def _refuse(at: str, message: str, code: str = X.INVALID_MARKET_SPEC) -> Refused:
    return Refused(code, f"{at}: {message}")


def _spec_of(m: Market) -> C.CreateMarket:
    return C.CreateMarket(market=m.market, base=m.base, quote=m.quote,
                          price_decimals=m.price_decimals, tick_size=m.tick_size,
                          lot_size=m.lot_size, min_qty=m.min_qty, max_qty=m.max_qty,
                          min_notional=m.min_notional, maker_fee_ppm=m.maker_fee_ppm,
                          taker_fee_ppm=m.taker_fee_ppm, market_band_bps=m.market_band_bps,
                          ref_band_bps=m.ref_band_bps)


def resting(v: Venue, market: str) -> list[Order]:
    book = v.books[market]
    return book.bids.orders_in_priority() + book.asks.orders_in_priority()


def _windows(log: MigrationLog, market: str, fees: bool, now: int) -> list[tuple[int, int, str]]:
    """Pending windows of other migrations on ``market`` as (start, end, migration id)."""
    spans: dict[tuple[str, int], list[int]] = {}
    for s in log.pending:
        if s.market == market and (s.maker_fee_ppm is not None) == fees:
            spans.setdefault((s.migration_id, s.index), []).append(s.at_ts)
    out = []
    for (mid, _), times in spans.items():
        start = min(times) if len(times) > 1 else now
        out.append((start, max(times), mid))
    return out


def _check_window(log: MigrationLog, market: str, fees: bool, start: int, end: int, now: int,
                  at: str) -> None:
    for lo, hi, mid in _windows(log, market, fees, now):
        if start < hi and lo < end:
            what = "fee schedule" if fees else "mode schedule"
            raise _refuse(f"{at}.start", f"overlaps the pending {what} of migration {mid} on "
                                         f"{market} ({lo}..{hi} ms)", X.INVALID_ARGUMENT)


class Planner:
    """Builds a ``_Plan`` change by change, naming the change and field at fault."""

    def __init__(self, v: Venue, cmd: C.ApplyMigration) -> None:
        self.e = v
        self.log = v.migrations
        self.mig = cmd
        self.now = v.ts
        self.p = _Plan()
        self.new_assets: dict[str, int] = {}
        self.new_markets: set[str] = set()
        self.delisted: set[str] = set()
        self.touched: set[str] = set()
        self.i = 0

    def plan(self) -> _Plan:
        mid = self.mig.migration_id
        check_shape(self.mig)
        done = next((r for r in self.log.records if r.migration_id == mid), None)
        if done is not None:
            state = f", rolled back at seq {done.rolled_back_seq}" if done.rolled_back_seq else ""
            raise _refuse("id", f"migration {mid} was already applied at seq {done.seq}{state}; "
                                "a new version needs a new id", MIGRATION_APPLIED)
        for i, ch in enumerate(self.mig.changes):
            self.i = i
            at = f"changes[{i}]"
            if isinstance(ch, S.NewAsset):
                self._new_asset(ch, at)
            elif isinstance(ch, S.NewMarket):
                self._new_market(ch, at)
            else:
                self._market_change(ch, at)
        return self.p

    def _new_asset(self, ch: S.NewAsset, at: str) -> None:
        if not 1 <= len(ch.asset) <= 16 or not ch.asset.isalnum() or not ch.asset.isascii():
            raise _refuse(f"{at}.asset", "1-16 ASCII letters or digits", X.INVALID_ARGUMENT)
        if not 0 <= ch.decimals <= 18:
            raise _refuse(f"{at}.decimals", "must be in 0..18", X.INVALID_ARGUMENT)
        if ch.asset in self.e.assets or ch.asset in self.new_assets:
            raise _refuse(f"{at}.asset", f"asset {ch.asset} exists", X.ASSET_EXISTS)
        self.new_assets[ch.asset] = ch.decimals
        self.p.assets.append(C.CreateAsset(asset=ch.asset, decimals=ch.decimals))

    def _decimals(self, asset: str, at: str) -> int:
        known = self.e.assets.get(asset)
        if known is not None:
            return known.decimals
        if asset in self.new_assets:
            return self.new_assets[asset]
        raise _refuse(at, f"unknown asset {asset!r}", X.UNKNOWN_ASSET)

    def _new_market(self, ch: S.NewMarket, at: str) -> None:
        if ch.market in self.e.markets or ch.market in self.new_markets:
            raise _refuse(f"{at}.market", f"market {ch.market} exists", X.MARKET_EXISTS)
        fields = {f: getattr(ch, f) for f in ch.__struct_fields__}
        spec = C.CreateMarket(**fields, reason=f"migration {self.mig.migration_id}")
        problem = validate_market(spec, self._decimals(ch.base, f"{at}.base"),
                                  self._decimals(ch.quote, f"{at}.quote"))
        if problem:
            raise _refuse(at, problem)
        self.new_markets.add(ch.market)
        self.p.markets.append(spec)

    def _view(self, market: str, at: str) -> Market:
        if market in self.new_markets:
            raise _refuse(f"{at}.market", f"{market} is created by this migration; give its "
                                          "values in the new_market change", X.INVALID_ARGUMENT)
        mkt = self.e.markets.get(market)
        if mkt is None:
            raise _refuse(f"{at}.market", f"unknown market {market!r}", X.UNKNOWN_MARKET)
        if mkt.mode == "closed":
            raise _refuse(f"{at}.market", f"{market} is closed (delisted)", X.MARKET_MODE)
        if market in self.delisted:
            raise _refuse(f"{at}.market", f"{market} is delisted by this migration; a delisting "
                                          "comes alone", X.INVALID_ARGUMENT)
        view = self.p.views.get(market)
        if view is None:
            view = self.p.views[market] = mkt.copy()
        return view

    def _validate(self, view: Market, at: str, field: str) -> None:
        problem = validate_market(_spec_of(view), self.e.assets[view.base].decimals,
                                  self.e.assets[view.quote].decimals)
        if problem:
            raise _refuse(f"{at}.{field}", problem)

    def _conflicts(self, view: Market, at: str, policy: str, what: str,
                   misfit: list[Order]) -> None:
        if not misfit:
            return
        if policy == "refuse-migration":
            ids = sorted(o.order_id for o in misfit)
            shown = ", ".join(str(oid) for oid in ids[:SHOWN_CONFLICTS])
            raise _refuse(f"{at}.on_conflict", f"{len(misfit)} resting order(s) in "
                                               f"{view.market} {what} (e.g. order(s) {shown}); "
                                               "on_conflict is refuse-migration",
                          MIGRATION_CONFLICT)
        for o in misfit:
            self.p.cancel.setdefault(o.order_id, view.market)

    def _market_change(self, ch: S.AnyChange, at: str) -> None:
        assert not isinstance(ch, S.NewAsset | S.NewMarket)
        view = self._view(ch.market, at)
        orders = resting(self.e, ch.market)
        if isinstance(ch, S.TickChange):
            view.tick_size = ch.tick_size
            self._validate(view, at, "tick_size")
            misfit = [o for o in orders if o.price % ch.tick_size]
            self._conflicts(view, at, ch.on_conflict, f"are priced off the new tick "
                                                      f"{ch.tick_size}", misfit)
        elif isinstance(ch, S.LotChange):
            view.lot_size = ch.lot_size
            view.min_qty = view.min_qty if ch.min_qty is None else ch.min_qty
            view.max_qty = view.max_qty if ch.max_qty is None else ch.max_qty
            if view.kind != "spot":
                raise _refuse(f"{at}.market", "the lot of a perpetual is its contract size; "
                                              "not changed by migrations", X.INVALID_ARGUMENT)
            self._validate(view, at, "lot_size")
            misfit = [o for o in orders if o.remaining % ch.lot_size]
            self._conflicts(view, at, ch.on_conflict, f"have quantities off the new lot "
                                                      f"{ch.lot_size}", misfit)
        elif isinstance(ch, S.LimitsChange):
            self._limits(ch, view, at, orders)
        elif isinstance(ch, S.FeeChange):
            self._fees(ch, view, at)
        elif isinstance(ch, S.ModeSchedule):
            self._mode(ch, view, at)
        else:
            self._delist(ch, view, at, orders)
            return
        self.touched.add(ch.market)

    def _limits(self, ch: S.LimitsChange, view: Market, at: str, orders: list[Order]) -> None:
        changed = ""
        for name in ("min_qty", "max_qty", "min_notional", "market_band_bps", "ref_band_bps"):
            value = getattr(ch, name)
            if value is not None:
                setattr(view, name, value)
                changed = changed or name
        if not changed:
            raise _refuse(at, "a limits change must set at least one limit", X.NO_CHANGE)
        self._validate(view, at, changed)
        misfit = [o for o in orders if not view.min_qty <= o.qty <= view.max_qty
                  or o.price * o.qty // view.price_div < view.min_notional]
        self._conflicts(view, at, ch.on_conflict, "are outside the new size or notional limits",
                        misfit)

    def _fees(self, ch: S.FeeChange, view: Market, at: str) -> None:
        mkt = self.e.markets[ch.market]
        start = self.now if ch.start is None or ch.start <= self.now else ch.start
        end = NEVER if ch.end is None else ch.end
        if end <= self.now:
            raise _refuse(f"{at}.end", f"is already past (engine time {self.now} ms)",
                          X.INVALID_ARGUMENT)
        _check_window(self.log, ch.market, True, start, end, self.now, at)
        trial = view.copy()
        trial.maker_fee_ppm, trial.taker_fee_ppm = ch.maker_fee_ppm, ch.taker_fee_ppm
        self._validate(trial, at, "taker_fee_ppm")
        mid = self.mig.migration_id
        why = f"fee schedule of migration {mid}"
        if start == self.now:
            view.maker_fee_ppm, view.taker_fee_ppm = ch.maker_fee_ppm, ch.taker_fee_ppm
        else:
            self.p.schedule.append(ScheduledStep(at_ts=start, market=ch.market, migration_id=mid,
                                             index=self.i, maker_fee_ppm=ch.maker_fee_ppm,
                                             taker_fee_ppm=ch.taker_fee_ppm, reason=why))
        if end != NEVER:
            self.p.schedule.append(ScheduledStep(at_ts=end, market=ch.market, migration_id=mid,
                                             index=self.i,
                                             maker_fee_ppm=mkt.maker_fee_ppm,
                                             taker_fee_ppm=mkt.taker_fee_ppm,
                                             reason=f"end of {why}"))

    def _mode(self, ch: S.ModeSchedule, view: Market, at: str) -> None:
        if ch.end <= self.now:
            raise _refuse(f"{at}.end", f"is already past (engine time {self.now} ms)",
                          X.INVALID_ARGUMENT)
        if view.mode not in ("open", "post_only", "cancel_only", "halted"):
            raise _refuse(f"{at}.market", f"{ch.market} is in {view.mode}; schedule modes "
                                          "only from open, post_only, cancel_only or halted",
                          X.MARKET_MODE)
        start = max(ch.start, self.now)
        _check_window(self.log, ch.market, False, start, ch.end, self.now, at)
        previous = self.e.markets[ch.market].mode
        if previous == ch.mode:
            raise _refuse(f"{at}.mode", f"{ch.market} is already {ch.mode}", X.NO_CHANGE)
        idx = self.i
        reason = f"migration {self.mig.migration_id}: {ch.reason}"
        if start == self.now:
            self.p.modes_now.append(C.SetMarketMode(market=ch.market, mode=ch.mode,
                                                    reason=reason))
        else:
            self.p.schedule.append(ScheduledStep(
                at_ts=start, market=ch.market, migration_id=self.mig.migration_id, index=idx,
                mode=ch.mode, expect_mode=previous, reason=reason))
        self.p.schedule.append(ScheduledStep(
            at_ts=ch.end, market=ch.market, migration_id=self.mig.migration_id, index=idx,
            mode=previous, expect_mode=ch.mode, reason=f"end of {reason}"))

    def _delist(self, ch: S.Delist, view: Market, at: str, orders: list[Order]) -> None:
        if view.kind != "spot":
            raise _refuse(f"{at}.market", "delisting a perpetual needs its positions settled; "
                                          "not done by migrations", X.INVALID_ARGUMENT)
        if ch.market in self.touched or any(s.market == ch.market for s in self.p.schedule):
            raise _refuse(f"{at}.market", "a delisting comes alone: other changes in this "
                                          "migration touch the market", X.INVALID_ARGUMENT)
        if any(s.market == ch.market for s in self.log.pending):
            raise _refuse(f"{at}.market", f"{ch.market} has a pending schedule of another "
                                          "migration; roll it back first", X.INVALID_ARGUMENT)
        self._conflicts(view, at, ch.on_conflict, "are open", orders)
        self.delisted.add(ch.market)
        reason = f"migration {self.mig.migration_id}: {ch.reason}"
        self.p.delist.append(C.SetMarketMode(market=ch.market, mode="closed", reason=reason))



def _subject(ch: S.AnyChange) -> tuple[str, str]:
    if isinstance(ch, S.NewAsset):
        return ("asset", ch.asset)
    if isinstance(ch, S.ModeSchedule):  # several windows per market; overlaps checked apart
        return (f"mode@{ch.start}", ch.market)
    return (str(type(ch).__struct_config__.tag), ch.market)


def check_shape(cmd: C.ApplyMigration) -> None:
    """What needs no live state: id, texts, counts, times, duplicate changes, overlapping
    windows. Raises ``Refused`` naming the field."""
    mid = cmd.migration_id
    if not 1 <= len(mid) <= 64 or not mid.isascii() or not mid[0].isalnum() \
            or not all(c.isalnum() or c in "._-" for c in mid):
        raise _refuse("id", "1-64 letters, digits, '.', '_' or '-', starting with a letter or "
                            "digit", X.INVALID_ARGUMENT)
    for name in ("description", "author"):
        if not getattr(cmd, name).strip():
            raise _refuse(name, "must not be empty", X.INVALID_ARGUMENT)
    if len(cmd.dry_run) > 200 or len(cmd.description) > 1000 or len(cmd.author) > 200:
        raise _refuse("description", "description <= 1000, author and dry_run <= 200 "
                                     "characters", X.INVALID_ARGUMENT)
    if not 1 <= len(cmd.changes) <= MAX_CHANGES:
        raise _refuse("changes", f"give 1..{MAX_CHANGES} changes", X.INVALID_ARGUMENT)
    seen: dict[tuple[str, str], int] = {}
    windows: dict[str, list[tuple[int, int, int]]] = {}
    for i, ch in enumerate(cmd.changes):
        at = f"changes[{i}]"
        key = _subject(ch)
        if key in seen:
            raise _refuse(at, f"changes the same thing as changes[{seen[key]}] ({key[0]} "
                              f"{key[1]}); merge them", X.INVALID_ARGUMENT)
        seen[key] = i
        if isinstance(ch, S.FeeChange | S.ModeSchedule):
            for name in ("start", "end"):
                value = getattr(ch, name)
                if value is not None and not 0 <= value <= MAX_INT:
                    raise _refuse(f"{at}.{name}", "time out of range", X.INVALID_ARGUMENT)
            if ch.start is not None and ch.end is not None and ch.end <= ch.start:
                raise _refuse(f"{at}.end", "must be after start", X.INVALID_ARGUMENT)
        if isinstance(ch, S.ModeSchedule | S.Delist) and not ch.reason.strip():
            raise _refuse(f"{at}.reason", "must not be empty", X.INVALID_ARGUMENT)
        if isinstance(ch, S.ModeSchedule):
            windows.setdefault(ch.market, []).append((ch.start, ch.end, i))
    for spans in windows.values():
        spans.sort()
        for (_, end, i), (start, _, j) in zip(spans, spans[1:], strict=False):
            if start < end:
                raise _refuse(f"changes[{j}].start", f"overlaps the window of changes[{i}] on "
                                                     "the same market", X.INVALID_ARGUMENT)


def plan(v: Venue, cmd: C.ApplyMigration) -> _Plan:
    """Check the whole migration against the state; raise ``Refused`` naming the change and
    field at fault. Changes nothing."""
    return Planner(v, cmd).plan()


def apply_migration(v: Venue, cmd: C.ApplyMigration, out: list[E.Event]) -> None:
    """All of the migration or nothing: ``plan`` refuses before any mutation, and every step
    below is one the plan has shown cannot be refused."""
    p = plan(v, cmd)
    log = v.migrations
    before = [market_state(v.markets[m]) for m in sorted(p.views)]
    why = f"migration {cmd.migration_id}"
    for asset in p.assets:
        markets.create_asset(v, asset, out)
    for market in p.markets:
        markets.create_market(v, market, out)
    for oid in sorted(p.cancel):
        order = v.orders[oid]
        mkt = v.markets[order.market]
        v.close_order(order, mkt, v.books[mkt.market].side(order.side == "buy"), CANCEL_REASON,
                      out)
    for name in sorted(p.views):
        mkt, view = v.markets[name], p.views[name]
        changes = {f: getattr(view, f) for f in META_FIELDS if getattr(view, f) != getattr(mkt, f)}
        if changes:
            markets.update_market(v, C.UpdateMarket(market=name, **changes, reason=why), out)
    for mode in p.modes_now + p.delist:
        markets.set_mode(v, mode, out)
    log.records.append(MigrationRecord(
        migration_id=cmd.migration_id, digest=cmd.digest, description=cmd.description,
        author=cmd.author, seq=v.seq, ts=v.ts, before=before,
        created_assets=[a.asset for a in p.assets], created_markets=[m.market for m in p.markets],
        cancelled=sorted(p.cancel), dry_run=cmd.dry_run))
    log.pending.extend(p.schedule)
    log.pending.sort(key=lambda s: s.at_ts)
    v.recompute_deadline()
    out.append(E.MigrationApplied(seq=v.seq, ts=v.ts, migration_id=cmd.migration_id,
                                  digest=cmd.digest, cancelled=len(p.cancel),
                                  scheduled=len(p.schedule)))
    for name in sorted(p.views):
        m = v.markets[name]
        assert all(o.price % m.tick_size == 0 and o.remaining % m.lot_size == 0
                   for o in resting(v, name)), f"{name}: an order left off the grid"
    assert not log.pending or log.pending[0].at_ts >= v.ts, "a step scheduled in the past"


def _rollback_target(log: MigrationLog, migration_id: str) -> MigrationRecord:
    record = next((r for r in log.records if r.migration_id == migration_id), None)
    if record is None:
        raise Refused(UNKNOWN_MIGRATION, f"no migration {migration_id!r} was applied")
    if record.rolled_back_seq:
        raise Refused(UNKNOWN_MIGRATION, f"migration {migration_id} was already rolled back "
                                         f"at seq {record.rolled_back_seq}")
    live = [r for r in log.records if not r.rolled_back_seq]
    if live[-1] is not record:
        raise Refused(MIGRATION_CONFLICT, f"roll back {live[-1].migration_id} first (it was "
                                          "applied later)")
    return record


def rollback_migration(v: Venue, cmd: C.RollbackMigration, out: list[E.Event]) -> None:
    """Put back the metadata recorded before the migration; only the latest one applied, so
    rollbacks unwind in order. Orders it cancelled stay cancelled."""
    if not isinstance(cmd.reason, str) or not cmd.reason.strip():
        raise Refused(X.INVALID_ARGUMENT, "a rollback needs a reason")
    mid = cmd.migration_id
    record = _rollback_target(v.migrations, mid)
    for name in record.created_markets:
        if resting(v, name):
            raise Refused(MIGRATION_CONFLICT, f"market {name}, created by {mid}, has open "
                                              "orders; cancel them first")
    for asset in record.created_assets:
        if v.net_deposits.get(asset) or v.fees.get(asset) or any(
                m.base == asset or m.quote == asset for m in v.markets.values()
                if m.market not in record.created_markets):
            raise Refused(MIGRATION_CONFLICT, f"asset {asset}, created by {mid}, is in use")
    why = f"rollback of migration {mid}: {cmd.reason}"
    v.migrations.pending = [s for s in v.migrations.pending if s.migration_id != mid]
    for old in record.before:
        _restore(v, old, why, out)
    for name in record.created_markets:
        del v.markets[name]
        del v.books[name]
    for asset in record.created_assets:
        del v.assets[asset]
        v.net_deposits.pop(asset, None)
        v.fees.pop(asset, None)
    v.recompute_deadline()
    record.rolled_back_seq = v.seq
    out.append(E.MigrationRolledBack(seq=v.seq, ts=v.ts, migration_id=mid, reason=cmd.reason))
    assert all(m.market in v.markets for m in record.before)


def _restore(v: Venue, old: MarketState, why: str, out: list[E.Event]) -> None:
    """The market's metadata and mode exactly as recorded; prices it has seen since stay."""
    mkt = v.markets[old.market]
    changes = {f: getattr(old, f) for f in META_FIELDS if getattr(old, f) != getattr(mkt, f)}
    for f, value in changes.items():
        setattr(mkt, f, value)
    if changes:
        out.append(E.MarketUpdated(seq=v.seq, ts=v.ts, market=mkt.market, changes=changes,
                                   reason=why))
    if (mkt.mode, mkt.mode_until, mkt.mode_reason) != (old.mode, old.mode_until,
                                                        old.mode_reason):
        out.append(E.ModeChanged(seq=v.seq, ts=v.ts, market=mkt.market, old=mkt.mode,
                                 new=old.mode, reason=why, until_ts=old.mode_until))
        mkt.mode, mkt.mode_reason, mkt.mode_until = old.mode, old.mode_reason, old.mode_until
        v.ledgers[mkt.kind].mode_changed(mkt, out)


def next_due(log: MigrationLog) -> int:
    return log.pending[0].at_ts if log.pending else NEVER


def run_due(v: Venue, out: list[E.Event]) -> None:
    """Timed steps whose time has come (called by the engine once ``ts`` reaches them)."""
    log = v.migrations
    while log.pending and log.pending[0].at_ts <= v.ts:
        step = log.pending.pop(0)
        mkt = v.markets.get(step.market)
        why = ""
        if mkt is None or mkt.mode == "closed":
            why = "market closed"
        elif step.mode is not None and mkt.mode != step.expect_mode:
            why = f"market is {mkt.mode}, not {step.expect_mode}"
        else:
            try:
                if step.mode is not None:
                    markets.set_mode(v, C.SetMarketMode(market=step.market, mode=step.mode,
                                                        reason=step.reason), out)
                else:
                    markets.update_market(v, C.UpdateMarket(
                        market=step.market, maker_fee_ppm=step.maker_fee_ppm,
                        taker_fee_ppm=step.taker_fee_ppm, reason=step.reason), out)
            except Refused as r:
                why = r.message
        if why:
            out.append(E.MigrationStepSkipped(seq=v.seq, ts=v.ts,
                                              migration_id=step.migration_id,
                                              market=step.market, reason=why))
    v.recompute_deadline()
