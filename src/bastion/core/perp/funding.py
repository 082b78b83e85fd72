"""Funding: premium samples, the per-interval rate, the cumulative index and its settlement.

Premium (sampled at each accepted index update while the market is live), with the top of book
as the impact prices:  P = [max(0, bid - index) - max(0, index - ask)] / index.
Rate per interval:     F = clamp(avg(P) + clamp(interest - avg(P), -c, +c), -max, +max).
Index step at a tick:  dI = F * mark * dt / interval   (dt = ms since the last tick, at most
                       one interval), in price units x 1e9 per base unit.
Payment of a position: size * dI / (price_div * 1e9) settle units, payers rounded up and
                       receivers down; the (non-negative) rounding dust goes to the insurance
                       fund, so every tick is exactly zero-sum.

Guard (Paradex 2026): whatever computed or supplied the new index, it may move at most
``max_funding x mark x dt / interval`` from the current one; a violation (e.g. a reset to zero)
halts the market and settles nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.engine import Refused
from bastion.core.matching import GuardViolation
from bastion.core.perp.calc import ceil_div, clamp, tdiv
from bastion.core.perp.state import INSURANCE, RATE_SCALE, PerpMarket

if TYPE_CHECKING:
    from bastion.core.perp.engine import PerpEngine


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


def funding_tick(pe: PerpEngine, cmd: C.FundingTick, out: list[E.Event]) -> None:
    eng = pe.eng
    mkt, pm = pe.perp_market(cmd.market)
    if mkt.mode == "closed":
        raise Refused(X.MARKET_MODE, f"market {mkt.market} is closed")
    supplied = cmd.index
    if supplied is not None and not (type(supplied) is int and abs(supplied) <= X.MAX_INT):
        raise Refused(X.INVALID_ARGUMENT, f"index must be an integer, got {supplied!r}")
    elapsed = eng.ts - pm.last_funding_ts
    if elapsed <= 0:
        raise Refused(X.NO_CHANGE, "funding already settled at this timestamp")
    dt = min(elapsed, pm.funding_interval_ms)
    old = pm.funding_index
    if not pe.active(pm):
        # restricted mode or no fresh oracle: nothing accrues for the paused time
        pm.last_funding_ts = eng.ts
        pm.premium_sum = pm.premium_count = 0
        out.append(E.FundingSettled(seq=eng.seq, ts=eng.ts, market=pm.market, rate_e9=0,
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
    # ---- accepted
    pm.funding_index = new
    pm.funding_rate_e9 = rate
    pm.last_funding_ts = eng.ts
    pm.premium_sum = pm.premium_count = 0
    paid, received = settle_positions(pe, pm)
    dust = paid - received
    if dust:
        pe.insurance(pm.settle).collateral += dust
        pe.touched.add((INSURANCE, pm.settle))
    out.append(E.FundingSettled(seq=eng.seq, ts=eng.ts, market=pm.market, rate_e9=rate,
                                index=new, dt=dt, paid=paid, dust=dust))


def settle_positions(pe: PerpEngine, pm: PerpMarket) -> tuple[int, int]:
    """Bring every position of the market to the current index; returns (paid, received)."""
    new = pm.funding_index
    den = pm.price_div * RATE_SCALE
    paid = 0
    received = 0
    margins = pe.margins
    settle = pm.settle
    touched = pe.touched
    for account, pos in pe.positions.get(pm.market, {}).items():
        owed = pos.size * (new - pos.funding_index)
        pos.funding_index = new
        if owed > 0:
            amount = ceil_div(owed, den)
            paid += amount
        elif owed < 0:
            amount = -(-owed // den)
            received -= amount
        else:
            continue
        margins[(account, settle)].collateral -= amount
        pos.funding_paid += amount
        touched.add((account, settle))
    return paid, received
