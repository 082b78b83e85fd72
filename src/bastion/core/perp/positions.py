"""Position accounting and account risk: how sizes, costs and realized PnL change, and what an
account is worth at mark with its funding settled.

A trade of ``qty`` for ``amount`` settle units changes the buyer's cost by +amount and the
seller's by -amount; closing part of a position moves the matching share of its cost into
collateral as realized PnL. Both steps are zero-sum on ``collateral - cost``, which is why funds
stay conserved whatever the rounding.
"""

from typing import final

from mypy_extensions import mypyc_attr

from bastion.core.arith import mul, mul_div
from bastion.core.perp.calc import PPM, tier_for
from bastion.core.perp.state import RATE_SCALE, PerpMarket, Position


def realize(pos: Position, delta: int, amount: int) -> int:
    """Apply a signed size change traded for ``amount`` (unsigned settle units).

    Returns the realized PnL the caller credits to collateral. Opening adds to the cost; closing
    removes the closed share of the cost (truncated toward zero, exact for a full close); a flip
    closes first and opens the rest with the remaining part of ``amount``."""
    size = pos.size
    if size == 0 or (size > 0) == (delta > 0):
        pos.size = size + delta
        pos.cost += amount if delta > 0 else -amount
        return 0
    want = -delta if delta < 0 else delta
    held = -size if size < 0 else size
    close = want if want < held else held
    part = amount if close == want else mul_div(amount, close, 1, want)
    cost = pos.cost
    if close == held:
        removed = cost
    else:  # tdiv(cost * close, held), without the big product
        removed = mul_div(cost, close, 1, held) if cost >= 0 else -mul_div(-cost, close, 1, held)
    realized = (part if size > 0 else -part) - removed
    pos.cost -= removed
    pos.size = size + (close if delta > 0 else -close)
    rest = want - close
    if rest:
        pos.size += rest if delta > 0 else -rest
        pos.cost += (amount - part) if delta > 0 else -(amount - part)
    pos.realized_pnl += realized
    return realized


def funding_owed(pos: Position, pm: PerpMarket) -> int:
    """What the position owes (negative: is owed) for the funding index's move since it last
    settled: payers round up, receivers down, so settling in any order never creates money."""
    moved = pm.funding_index - pos.funding_index
    if not moved:
        return 0
    return -(-mul(pos.size, moved) // mul(pm.price_div, RATE_SCALE))


@final
@mypyc_attr(acyclic=True)
class Risk:
    """One cross-margin account at mark, funding settled: ``wallet`` = collateral - funding
    owed; ``equity`` (margin balance) = wallet + unrealized PnL; ``maintenance`` and ``initial``
    summed over positions; ``upnl`` the unrealized part. A native record, not a NamedTuple:
    every order placed builds one, and compiled code then builds it without a Python call."""

    __slots__ = ("equity", "initial", "maintenance", "upnl", "wallet")

    def __init__(self, equity: int, maintenance: int, initial: int, upnl: int,
                 wallet: int) -> None:
        self.equity = equity
        self.maintenance = maintenance
        self.initial = initial
        self.upnl = upnl
        self.wallet = wallet

    def __repr__(self) -> str:
        return (f"Risk(equity={self.equity}, maintenance={self.maintenance}, "
                f"initial={self.initial}, upnl={self.upnl}, wallet={self.wallet})")


def risk(collateral: int, positions: dict[str, Position], markets: dict[str, PerpMarket],
         leverage: dict[str, int]) -> Risk:
    """Inlined ``value``/``maintenance``/``initial``/``funding_owed`` (one tier lookup per
    position): this runs for every order placed and every account re-keyed."""
    mm = 0
    im = 0
    upnl = 0
    owed = 0
    for name, pos in positions.items():
        pm = markets[name]
        mark = pm.mark
        div = pm.price_div
        size = pos.size
        upnl += mul(size, mark) // div - pos.cost
        moved = pm.funding_index - pos.funding_index
        if moved:
            owed -= -mul(size, moved) // mul(div, RATE_SCALE)
        n = mul(size if size > 0 else -size, mark) // div
        if n > 0:
            tiers = pm.tiers
            t = tiers[0] if n <= tiers[0].max_notional else tier_for(tiers, n)
            mm += -(-(mul(n, t.mmr_ppm) - t.cum_ppm) // PPM)
            lev = leverage.get(name, pm.default_leverage) if leverage else pm.default_leverage
            im += -(-n // (lev if lev < t.max_leverage else t.max_leverage))
    wallet = collateral - owed
    return Risk(wallet + upnl, mm, im, upnl, wallet)


def free_margin(collateral: int, order_im: int, positions: dict[str, Position],
                markets: dict[str, PerpMarket], leverage: dict[str, int]) -> int:
    """``risk(...).equity - risk(...).initial - order_im``, what new orders may reserve,
    without the maintenance figures and the ``Risk`` record: order entry asks this on every
    order placed."""
    free = collateral - order_im
    for name, pos in positions.items():
        pm = pos.pm
        if pm is None:
            pm = markets[name]
        free += free_term(pos, pm, leverage)
    return free


def free_term(pos: Position, pm: PerpMarket, leverage: dict[str, int] | None) -> int:
    """One position's part of ``free_margin``: value at mark - cost - funding owed - initial
    margin (``pm``: its market's record; ``leverage``: the account's settings, None when it
    has none)."""
    mark = pm.mark
    div = pm.price_div
    size = pos.size
    term = mul(size, mark) // div - pos.cost
    moved = pm.funding_index - pos.funding_index
    if moved:
        term += -mul(size, moved) // mul(div, RATE_SCALE)  # minus what it owes, rounded up
    n = mul(size if size > 0 else -size, mark) // div
    if n > 0:
        tiers = pm.tiers
        t = tiers[0] if n <= tiers[0].max_notional else tier_for(tiers, n)
        lev = leverage.get(pm.market, pm.default_leverage) if leverage else pm.default_leverage
        term -= -(-n // (lev if lev < t.max_leverage else t.max_leverage))
    return term
