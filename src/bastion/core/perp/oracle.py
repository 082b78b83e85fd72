"""Oracle: index from several feeder sources, mark price, and the guards on both.

Index: sources whose own timestamp is older than ``source_max_age_ms`` (or in the future) are
dropped; fewer than ``min_sources`` fresh ones and the update is refused (ORACLE_STALE). The
rest are clamped to +-``source_band_bps`` around their median and averaged.

Mark: median of (index x (1 + F x t_left / interval), index + average basis over
``basis_window_ms``, last trade), clamped into the order price band around the index; basis is
book mid minus index, F the funding rate the samples so far imply (Binance's formula).

Guard: within each ``move_window_ms`` window neither index nor mark may move more than
``max_move_bps`` from where the window started; a violation halts the market and the update
acts on nothing (no index change, no trigger, no liquidation). ``ResetOracle`` lets an operator
re-anchor after a real move, only while the market is restricted.
"""

from typing import Any

from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.ledger.margin import MarginLedger
from bastion.core.modes import RESTRICTED
from bastion.core.perp.calc import ceil_div, clamp, median, tdiv
from bastion.core.perp.funding import premium_e9, rate_e9
from bastion.core.perp.state import RATE_SCALE, PerpMarket
from bastion.core.perp.triggers_cmd import fire
from bastion.core.rules import BPS, GuardViolation, Refused

MAX_SOURCES = 32


def aggregate(pm: PerpMarket, sources: object, now: int) -> tuple[int, int, int]:
    """(index, used, dropped) from a feeder update, or ``Refused``."""
    if not isinstance(sources, list) or not 1 <= len(sources) <= MAX_SOURCES:
        raise Refused(X.INVALID_ARGUMENT, f"sources must be a list of 1..{MAX_SOURCES}")
    seen: set[str] = set()
    fresh: list[int] = []
    for item in sources:
        if not isinstance(item, C.SourcePrice):
            raise Refused(X.INVALID_ARGUMENT, "each source needs a distinct 1-32 char name")
        # its fields read as ``Any``: an in-process command may carry any type, and compiled
        # code would trust the annotations
        s: Any = item
        name = s.source
        price = s.price
        ts = s.ts
        if not isinstance(name, str) or not 1 <= len(name) <= 32 or name in seen:
            raise Refused(X.INVALID_ARGUMENT, "each source needs a distinct 1-32 char name")
        if type(price) is not int or not 1 <= price <= X.MAX_INT or type(ts) is not int:
            raise Refused(X.INVALID_PRICE, f"source {name}: price must be a positive "
                                           "integer and ts an integer")
        seen.add(name)
        if now - pm.source_max_age_ms <= ts <= now:
            fresh.append(price)
    if len(fresh) < pm.min_sources:
        raise Refused(X.ORACLE_STALE, f"{len(fresh)} fresh sources, {pm.min_sources} needed")
    mid = median(fresh)
    band = pm.source_band_bps
    low = mid * (BPS - band) // BPS
    high = ceil_div(mid * (BPS + band), BPS)
    index = sum(clamp(p, low, high) for p in fresh) // len(fresh)
    return index, len(fresh), len(sources) - len(fresh)


def update_index(pe: MarginLedger, cmd: C.UpdateIndex, out: list[E.Event]) -> None:
    v = pe.v
    raw: Any = cmd
    mkt, pm = pe.perp_market(raw.market)
    if mkt.mode == "closed":
        raise Refused(X.MARKET_MODE, f"market {mkt.market} is closed")
    now = v.ts
    index, used, dropped = aggregate(pm, raw.sources, now)
    book = v.books[mkt.market]
    bid = book.bids.best()
    ask = book.asks.best()
    live = mkt.mode == "open"
    premium = premium_e9(index, bid, ask)
    # basis average over the window, with this sample, computed before anything changes
    horizon = now - pm.basis_window_ms
    basis = pm.basis
    stale = 0
    stale_sum = 0
    while stale < len(basis) and basis[stale][0] <= horizon:
        stale_sum += basis[stale][1]
        stale += 1
    sample = (bid + ask) // 2 - index if bid is not None and ask is not None else None
    b_sum = pm.basis_sum - stale_sum + (sample or 0)
    b_count = len(basis) - stale + (sample is not None)
    p2 = index + (tdiv(b_sum, b_count) if b_count else 0)
    rate = rate_e9(pm, premium if live else None)
    t_left = max(0, pm.funding_interval_ms - (now - pm.last_funding_ts))
    p1 = index + tdiv(index * rate * t_left, pm.funding_interval_ms * RATE_SCALE)
    p3 = mkt.last_price or index
    band = pm.price_band_bps
    mark = clamp(median([p1, p2, p3]), index * (BPS - band) // BPS,
                 index * (BPS + band) // BPS)
    # ---- guard: bounded move per window (acts on nothing when it trips)
    new_window = pm.anchor_index == 0 or now - pm.anchor_ts >= pm.move_window_ms
    ref_index = pm.index if new_window else pm.anchor_index
    ref_mark = pm.mark if new_window else pm.anchor_mark
    if pm.anchor_index == 0:
        ref_index = ref_mark = 0
    if pm.guards:
        limit = pm.max_move_bps
        for name, new, ref in (("index_move", index, ref_index), ("mark_move", mark, ref_mark)):
            if ref and abs(new - ref) * BPS > ref * limit:
                raise GuardViolation(pm.market, name, f"{name.split('_')[0]} {ref} -> {new} "
                                     f"moves more than {limit} bps within "
                                     f"{pm.move_window_ms} ms")
    # ---- accepted
    if new_window:
        pm.anchor_index = ref_index or index
        pm.anchor_mark = ref_mark or mark
        pm.anchor_ts = now
    del basis[:stale]
    if sample is not None:
        basis.append((now, sample))
    pm.basis_sum = b_sum
    pm.index = index
    pm.index_ts = now
    pm.mark = mark
    mkt.ref_price = index
    if live:
        pm.armed = True
        pm.premium_sum += premium
        pm.premium_count += 1
    out.append(E.IndexUpdated(seq=v.seq, ts=now, market=pm.market, index=index, mark=mark,
                              used=used, dropped=dropped))
    if pe.active(pm):
        fire(pe, mkt, pm, out)
        for account in pe.liq.crossed(pm.market, pm.settle, mark):
            pe.touched[(account, pm.settle)] = None
        pe.liq.compact(pm.market, pm.settle)


def reset_oracle(pe: MarginLedger, cmd: C.ResetOracle, out: list[E.Event]) -> None:
    v = pe.v
    raw: Any = cmd
    mkt, pm = pe.perp_market(raw.market)
    reason = raw.reason
    if not isinstance(reason, str) or not reason.strip():
        raise Refused(X.INVALID_ARGUMENT, "an oracle reset needs a reason")
    if mkt.mode not in RESTRICTED:
        raise Refused(X.MARKET_MODE, f"market {mkt.market} is {mkt.mode}: reset the oracle "
                                     "only in a restricted mode")
    pm.anchor_index = pm.anchor_mark = pm.anchor_ts = 0
    pm.armed = False
    out.append(E.OracleReset(seq=v.seq, ts=v.ts, market=pm.market, reason=reason))
