"""Funding: premium samples, the per-interval rate, the cumulative index and its settlement.

Premium (sampled at each accepted index update while the market is live), with the top of book
as the impact prices:  P = [max(0, bid - index) - max(0, index - ask)] / index.
Rate per interval:     F = clamp(avg(P) + clamp(interest - avg(P), -c, +c), -max, +max).
Index step at a tick:  dI = F * mark * dt / interval   (dt = ms since the last tick, at most
                       one interval), in price units x 1e9 per base unit.
Payment of a position: size * dI / (price_div * 1e9) settle units, payers rounded up and
                       receivers down, settled lazily: a tick moves the index only (O(1) in
                       positions); a position pays or collects when its size next changes,
                       through the market's funding pool, and equity counts it at once. The
                       liquidation index keys every account by the funding index at which its
                       allowance runs out, so a tick re-checks only the accounts it crossed;
                       those past half their allowance are re-checked a few per command
                       after the tick (``MarginLedger.recheck_soft``).

Guard (Paradex 2026): whatever computed or supplied the new index, it may move at most
``max_funding x mark x dt / interval`` from the current one; a violation (e.g. a reset to zero)
halts the market and settles nothing.
"""

from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.ledger.margin import MarginLedger
from bastion.core.perp.calc import clamp, tdiv
from bastion.core.perp.state import RATE_SCALE, PerpMarket
from bastion.core.rules import GuardViolation, Refused


def premium_e9(index: int, bid: int | None, ask: int | None) -> int:
    up = bid - index if bid is not None and bid > index else 0
    down = index - ask if ask is not None and ask < index else 0
    return tdiv((up - down) * RATE_SCALE, index)


def rate_e9(pm: PerpMarket, extra: int | None = None) -> int:
    """Funding rate per interval from the premium samples (plus ``extra``, a tentative one)."""
    total = pm.premium_sum + (extra or 0)
    count = pm.premium_count + (extra is not None)
    avg = tdiv(total, count) if count else 0
    c = pm.funding_clamp_e9
    f = avg + clamp(pm.interest_e9 - avg, -c, c)
    return clamp(f, -pm.max_funding_e9, pm.max_funding_e9)


def max_step(pm: PerpMarket, dt: int) -> int:
    """Largest legal index move in ``dt`` ms (+1 for the rounding of the step itself)."""
    return pm.max_funding_e9 * pm.mark * dt // pm.funding_interval_ms + 1


def funding_tick(pe: MarginLedger, cmd: C.FundingTick, out: list[E.Event]) -> None:
    v = pe.v
    mkt, pm = pe.perp_market(cmd.market)
    if mkt.mode == "closed":
        raise Refused(X.MARKET_MODE, f"market {mkt.market} is closed")
    supplied = cmd.index
    if supplied is not None and not (type(supplied) is int and abs(supplied) <= X.MAX_INT):
        raise Refused(X.INVALID_ARGUMENT, f"index must be an integer, got {supplied!r}")
    elapsed = v.ts - pm.last_funding_ts
    if elapsed <= 0:
        raise Refused(X.NO_CHANGE, "funding already settled at this timestamp")
    dt = min(elapsed, pm.funding_interval_ms)
    old = pm.funding_index
    if not pe.active(pm):
        # restricted mode or no fresh oracle: nothing accrues for the paused time
        pm.last_funding_ts = v.ts
        pm.premium_sum = pm.premium_count = 0
        out.append(E.FundingSettled(seq=v.seq, ts=v.ts, market=pm.market, rate_e9=0,
                                    index=old, dt=0, paused=True))
        return
    interval = pm.funding_interval_ms
    if supplied is None:
        rate = rate_e9(pm)
        new = old + tdiv(rate * pm.mark * dt, interval)
    else:
        new = supplied
        rate = tdiv((new - old) * interval, pm.mark * dt)
    if pm.guards:
        allowed = max_step(pm, dt)
        if abs(new - old) > allowed:
            guard = "funding_index_reset" if new == 0 else "funding_index_jump"
            raise GuardViolation(pm.market, guard, f"funding index {old} -> {new} moves more "
                                 f"than {allowed} allowed in {dt} ms at mark {pm.mark}")
    # ---- accepted: O(1) in positions; each settles lazily (ledger.margin)
    pm.funding_index = new
    pm.funding_rate_e9 = rate
    pm.last_funding_ts = v.ts
    pm.premium_sum = pm.premium_count = 0
    for account in pe.liq.crossed_funding(pm.market, pm.settle, new):
        pe.touched[(account, pm.settle)] = None
    if pe.liq.funding_pending(pm.market, pm.settle, new):
        pe.soft_markets.add(pm.market)
    moved = pm.open_interest * abs(new - old) // (pm.price_div * RATE_SCALE)
    out.append(E.FundingSettled(seq=v.seq, ts=v.ts, market=pm.market, rate_e9=rate,
                                index=new, dt=dt, paid=moved, dust=0))
