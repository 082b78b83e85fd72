"""Dry-run of a migration against an exact copy of live state and its recent real traffic.

The copy is the newest snapshot plus the journal tail, read-only (a live node keeps running).
The migration is applied to the state as it was N minutes ago; the journal's commands since
then are replayed through that unchanged copy and the migrated one, and every command whose
outcome differs is counted by command class and reject code. The migration is also applied to
the state as it is now, which is what ``apply`` will meet. This is the check OKX's August 2023
demo environment could not make: its data had drifted from production.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from bastion.core import commands as C
from bastion.core import events as E
from bastion.core.codec import decode_command
from bastion.core.engine import Engine
from bastion.core.migration_spec import Delist, ModeSchedule
from bastion.journal.errors import DurabilityError
from bastion.journal.local import LocalJournal
from bastion.node.layout import DataDir
from bastion.node.recovery import rebuild
from bastion.ops.migrations import spec as S
from bastion.snapshots.store import SnapshotStore

MINUTE_MS = 60_000
MAX_EXAMPLES = 3
#: reject codes a mode window or delisting declares for its market
MODE_CODES = frozenset(("MARKET_MODE", "POST_ONLY_WOULD_CROSS", "PRICE_BAND"))
#: marks a refusal of a cancel/amend whose order the migration itself cancelled (declared)
GONE = " (order cancelled by the migration)"
#: marks a refusal of a cancel/amend whose placement was refused: a consequence, counted once
ORPHAN = " (its placement was refused)"


@dataclass
class ClassChange:
    command: str
    market: str
    before: str
    after: str
    count: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class DryRun:
    migration: S.Migration
    live_seq: int
    live_ts: int
    window_from: int
    window_minutes: int
    commands: int = 0
    refusal_now: tuple[str, str] | None = None
    cancelled_now: list[dict[str, Any]] = field(default_factory=list)
    refusal_at_start: tuple[str, str] | None = None
    cancelled_at_start: int = 0
    baseline_ok: Counter[tuple[str, str]] = field(default_factory=Counter)
    changes: dict[tuple[str, str, str, str], ClassChange] = field(default_factory=dict)
    fees: dict[str, list[int]] = field(default_factory=dict)
    bulk: list[dict[str, Any]] = field(default_factory=list)
    fee_assets: dict[str, tuple[str, int]] = field(default_factory=dict)
    gone: set[tuple[int, int | str]] = field(default_factory=set)
    orphans: set[tuple[int, int | str]] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return self.refusal_now is None and self.refusal_at_start is None and not self.bulk


def _outcome(events: list[E.Event]) -> tuple[str, E.Rejected | None]:
    for ev in events:
        if isinstance(ev, E.Rejected):
            return ev.code, ev
    return "ok", None


def _example(cmd: Any, rejected: E.Rejected | None) -> dict[str, Any]:
    body = {k: v for k, v in msgspec.to_builtins(cmd).items() if k not in ("ts",)}
    return {"command": body, "message": rejected.message if rejected else ""}


def _declared(mig: S.Migration) -> dict[str, frozenset[str] | None]:
    """Markets where the migration itself says orders will be refused: ``None`` = any code."""
    out: dict[str, frozenset[str] | None] = {}
    for ch in mig.changes:
        if isinstance(ch, Delist):
            out[ch.market] = None
        elif isinstance(ch, ModeSchedule) and out.get(ch.market, MODE_CODES) is not None:
            out[ch.market] = MODE_CODES
    return out


def _ts_at(journal: LocalJournal, seq: int) -> int:
    for _, payload in journal.read(seq, seq):
        return decode_command(payload).ts
    raise DurabilityError(f"no record at seq {seq}", code="BAD_RANGE")


def window_start(journal: LocalJournal, minutes: int) -> tuple[int, int, int]:
    """(first seq of the window, last seq, its ts): binary search on the stamped times."""
    last = journal.last_seq
    if last < 1:
        raise DurabilityError("the journal is empty: nothing to dry-run against",
                              code="EMPTY_JOURNAL")
    end_ts = _ts_at(journal, last)
    target = end_ts - minutes * MINUTE_MS
    lo, hi = journal.first_seq, last
    while lo < hi:
        mid = (lo + hi) // 2
        if _ts_at(journal, mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo, last, end_ts


def _try_apply(engine: Engine, mig: S.Migration) -> tuple[list[E.Event], tuple[str, str] | None]:
    """Apply the migration's one command to ``engine`` (a copy), as the next command at the
    same time; its refusal as (code, message)."""
    cmd = S.to_command(mig)
    cmd.seq, cmd.ts = engine.seq + 1, engine.ts
    events = engine.apply(cmd)
    refused = next((e for e in events if isinstance(e, E.Rejected)), None)
    if refused is not None:
        return [], (refused.code, refused.message)
    return events, None


def _cancelled(events: list[E.Event]) -> list[dict[str, Any]]:
    return [{"order_id": e.order_id, "account": e.account, "market": e.market,
             "remaining": e.remaining, "reason": e.reason}
            for e in events if isinstance(e, E.OrderCanceled)]


def what_if(mig: S.Migration) -> S.Migration:
    """The migration with every ``on_conflict`` set to ``cancel``: replaying traffic needs it
    applied even where the real one would be refused (the refusal is reported on its own)."""
    changes = [msgspec.structs.replace(ch, on_conflict="cancel") if hasattr(ch, "on_conflict")
               else ch for ch in mig.changes]
    return msgspec.structs.replace(mig, changes=changes)


#: commands after which a migration refused for a missing market or asset may apply
CREATES = (C.CreateAsset, C.CreateMarket, C.CreatePerpMarket)


def dry_run(mig: S.Migration, data: Path, *, minutes: int = 10, max_refused_pct: float = 1.0,
            min_refused: int = 5) -> DryRun:
    """Fork the live state, apply ``mig`` to the copy, replay the last ``minutes`` of traffic
    through both; nothing in ``data`` is written. If the window begins before a market the
    migration needs existed, the fork happens right after that market was created."""
    layout = DataDir.at(data).require()
    store = SnapshotStore(layout.snapshots)
    trial = what_if(mig)
    with LocalJournal(layout.journal, archive_dir=layout.journal_archive,
                      readonly=True) as journal:
        first, last, end_ts = window_start(journal, minutes)
        base, _ = rebuild(journal, store, first - 1, progress=False)
        rep = DryRun(migration=mig, live_seq=last, live_ts=end_ts, window_from=first,
                     window_minutes=minutes)
        migrated: Engine | None = None
        retry = True
        for seq, payload in journal.read(first, last):
            cmd = decode_command(payload)
            if migrated is None and retry:
                migrated = Engine.from_state(base.export_state())
                events, rep.refusal_at_start = _try_apply(migrated, trial)
                if rep.refusal_at_start is None:
                    rep.window_from = seq
                    rep.cancelled_at_start = len(_cancelled(events))
                    rep.gone = _gone(base, events)
                else:
                    migrated = None
            ev_b = base.apply(cmd)
            retry = isinstance(cmd, CREATES)
            if migrated is None:
                continue
            # the copy took one extra command (the migration): its sequence runs one ahead
            _compare(rep, cmd, ev_b, migrated.apply(msgspec.structs.replace(cmd, seq=seq + 1)))
    now_events, rep.refusal_now = _try_apply(Engine.from_state(base.export_state()), mig)
    rep.cancelled_now = _cancelled(now_events)
    rep.fee_assets = {m: (base.markets[m].quote, base.assets[base.markets[m].quote].decimals)
                      for m in rep.fees if m in base.markets}
    _bulk(rep, _declared(mig), max_refused_pct, min_refused)
    return rep


def _gone(base: Engine, events: list[E.Event]) -> set[tuple[int, int | str]]:
    """(account, order id) and (account, client id) of the orders the migration cancelled."""
    out: set[tuple[int, int | str]] = set()
    for ev in events:
        if isinstance(ev, E.OrderCanceled):
            out.add((ev.account, ev.order_id))
            order = base.orders.get(ev.order_id)
            if order is not None and order.client_id:
                out.add((ev.account, order.client_id))
    return out


def _compare(rep: DryRun, cmd: Any, ev_b: list[E.Event], ev_m: list[E.Event]) -> None:
    rep.commands += 1
    kind = type(cmd).__name__
    market = getattr(cmd, "market", "") or ""
    before, _ = _outcome(ev_b)
    after, rejected = _outcome(ev_m)
    if after != before and isinstance(cmd, C.CancelOrder | C.AmendOrder):
        keys = ((cmd.account, cmd.order_id), (cmd.account, cmd.client_id))
        if any(k in rep.gone for k in keys):
            after += GONE
        elif any(k in rep.orphans for k in keys):
            after += ORPHAN
    elif before == "ok" and after != "ok" and isinstance(cmd, C.PlaceOrder):
        rep.orphans.update((ev.account, ev.order_id) for ev in ev_b
                           if isinstance(ev, E.OrderAccepted))
        if cmd.client_id:
            rep.orphans.add((cmd.account, cmd.client_id))
    if before == "ok":
        rep.baseline_ok[(kind, market)] += 1
    if before != after:
        key = (kind, market, before, after)
        change = rep.changes.get(key)
        if change is None:
            change = rep.changes[key] = ClassChange(kind, market, before, after)
        change.count += 1
        if len(change.examples) < MAX_EXAMPLES:
            change.examples.append(_example(cmd, rejected))
    for label, events in ((0, ev_b), (1, ev_m)):
        for ev in events:
            if isinstance(ev, E.Trade):
                row = rep.fees.setdefault(ev.market, [0, 0, 0])
                row[label] += ev.maker_fee + ev.taker_fee
                if label == 0:
                    row[2] += 1


def _bulk(rep: DryRun, declared: dict[str, frozenset[str] | None], max_pct: float,
          min_count: int) -> None:
    """Classes of previously accepted commands now refused above the threshold: OKX's
    22.5 minutes of refused order entry, found before it happens."""
    refused: Counter[tuple[str, str]] = Counter()
    for (kind, market, before, after), change in rep.changes.items():
        codes = declared.get(market, frozenset())
        if before == "ok" and after != "ok" and not after.endswith((GONE, ORPHAN)) \
                and not (codes is None or after in codes):
            refused[(kind, market)] += change.count
    for (kind, market), n in sorted(refused.items()):
        total = rep.baseline_ok[(kind, market)]
        pct = 100.0 * n / total if total else 100.0
        if n >= min_count and pct > max_pct:
            rep.bulk.append({"command": kind, "market": market, "refused": n,
                             "previously_accepted": total, "percent": round(pct, 2)})


def report_dict(rep: DryRun) -> dict[str, Any]:
    mig = rep.migration
    declared = _declared(mig)
    by_market: Counter[str] = Counter(c["market"] for c in rep.cancelled_now)
    return {
        "ok": rep.ok,
        "migration": {"id": mig.id, "digest": mig.digest, "description": mig.description,
                      "author": mig.author, "changes": len(mig.changes)},
        "live": {"seq": rep.live_seq, "ts": rep.live_ts},
        "refused_now": None if rep.refusal_now is None else
        {"code": rep.refusal_now[0], "message": rep.refusal_now[1]},
        "cancelled_now": {"count": len(rep.cancelled_now), "by_market": dict(by_market),
                          "orders": rep.cancelled_now[:100]},
        "window": {"minutes": rep.window_minutes, "from_seq": rep.window_from,
                   "to_seq": rep.live_seq, "commands": rep.commands},
        "refused_at_window_start": None if rep.refusal_at_start is None else
        {"code": rep.refusal_at_start[0], "message": rep.refusal_at_start[1]},
        "cancelled_at_window_start": rep.cancelled_at_start,
        "outcome_changes": [
            {"command": c.command, "market": c.market, "before": c.before, "after": c.after,
             "count": c.count, "previously_accepted": rep.baseline_ok[(c.command, c.market)],
             "declared": c.after.endswith(GONE) or (c.market in declared and (
                 declared[c.market] is None or c.after in (declared[c.market] or ()))),
             "examples": c.examples}
            for c in sorted(rep.changes.values(), key=lambda c: -c.count)
        ],
        "fees": {m: {"asset": rep.fee_assets.get(m, ("", 0))[0],
                     "decimals": rep.fee_assets.get(m, ("", 0))[1], "baseline": b, "migrated": a,
                     "delta": a - b, "trades": n}
                 for m, (b, a, n) in sorted(rep.fees.items())},
        "bulk_refusals": rep.bulk,
    }
