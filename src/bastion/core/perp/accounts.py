"""Margin transfers, leverage and the insurance fund's capital.

``AddMargin`` is accepted in every mode (OKX's recovery period allows it: adding margin can only
make an account safer). ``RemoveMargin`` releases only what exceeds the initial margin of the
positions and open orders, without counting unrealized profit, and only while every market the
account holds has a live oracle (otherwise the margin cannot be valued).
"""

from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.ledger.margin import MarginLedger
from bastion.core.perp.positions import risk
from bastion.core.perp.state import INSURANCE
from bastion.core.rules import Refused, int_in


def _settle_asset(pe: MarginLedger, asset: object) -> str:
    pe.v.asset(asset)
    assert isinstance(asset, str)
    if not any(pm.settle == asset for pm in pe.markets.values()):
        raise Refused(X.INVALID_ARGUMENT, f"{asset} settles no perpetual market")
    return asset


def _amount(value: object) -> int:
    if not int_in(value, 1, X.MAX_INT):
        raise Refused(X.INVALID_AMOUNT, f"amount must be a positive integer, got {value!r}")
    assert isinstance(value, int)
    return value


def add_margin(pe: MarginLedger, cmd: C.AddMargin, out: list[E.Event]) -> None:
    v = pe.v
    acct = v.account(cmd.account)
    asset = _settle_asset(pe, cmd.asset)
    amount = _amount(cmd.amount)
    have = acct.available.get(asset, 0)
    if have < amount:
        raise Refused(X.INSUFFICIENT_FUNDS, f"adding {amount} {asset} of margin exceeds "
                                            f"available {have}")
    acct.available[asset] = have - amount
    pe.margin(acct.account, asset).collateral += amount
    pe.touched[(acct.account, asset)] = None
    out.append(E.MarginTransferred(seq=v.seq, ts=v.ts, account=acct.account, asset=asset,
                                   delta=amount))


def withdrawable(pe: MarginLedger, account: int, asset: str) -> int:
    """Collateral beyond initial margin and order holds, unrealized profit not counted."""
    ma = pe.margins.get((account, asset))
    if ma is None:
        return 0
    r = pe.risk(ma)
    return max(0, min(r.wallet, r.wallet + min(r.upnl, 0) - r.initial - ma.order_im))


def remove_margin(pe: MarginLedger, cmd: C.RemoveMargin, out: list[E.Event]) -> None:
    v = pe.v
    acct = v.account(cmd.account)
    asset = _settle_asset(pe, cmd.asset)
    amount = _amount(cmd.amount)
    who = (acct.account, asset)
    if not pe.all_active(who):
        raise Refused(X.ORACLE_STALE, "margin cannot be valued: a market of this account has "
                                      "no live mark price")
    free = withdrawable(pe, acct.account, asset)
    if amount > free:
        raise Refused(X.INSUFFICIENT_MARGIN, f"removing {amount} {asset} exceeds the {free} "
                                             "above initial margin")
    pe.margins[who].collateral -= amount
    acct.available[asset] = acct.available.get(asset, 0) + amount
    pe.touched[who] = None
    out.append(E.MarginTransferred(seq=v.seq, ts=v.ts, account=acct.account, asset=asset,
                                   delta=-amount))


def set_leverage(pe: MarginLedger, cmd: C.SetLeverage, out: list[E.Event]) -> None:
    v = pe.v
    acct = v.account(cmd.account)
    _, pm = pe.perp_market(cmd.market)
    top = pm.tiers[0].max_leverage
    if not int_in(cmd.leverage, 1, top):
        raise Refused(X.INVALID_LEVERAGE, f"leverage must be an integer in 1..{top}")
    ma = pe.margins.get((acct.account, pm.settle))
    current = pe.leverage(ma, pm)
    if current == cmd.leverage:
        raise Refused(X.NO_CHANGE, f"leverage is already {cmd.leverage}")
    if ma is not None and cmd.leverage < current:
        wanted = dict(ma.leverage)
        wanted[pm.market] = cmd.leverage
        r = risk(ma.collateral, ma.positions, pe.markets, wanted)
        if r.equity - r.initial - ma.order_im < 0:
            raise Refused(X.INSUFFICIENT_MARGIN, f"leverage {cmd.leverage} needs initial "
                                                 f"margin {r.initial} + orders {ma.order_im}, "
                                                 f"equity {r.equity}")
    pe.margin(acct.account, pm.settle).set_leverage(pm.market, cmd.leverage)
    out.append(E.LeverageChanged(seq=v.seq, ts=v.ts, account=acct.account,
                                 market=pm.market, leverage=cmd.leverage))


def fund_insurance(pe: MarginLedger, cmd: C.FundInsurance, out: list[E.Event]) -> None:
    v = pe.v
    asset = _settle_asset(pe, cmd.asset)
    amount = _amount(cmd.amount)
    if not isinstance(cmd.reason, str) or not cmd.reason.strip():
        raise Refused(X.INVALID_ARGUMENT, "funding the insurance fund needs a reason")
    pe.insurance(asset).collateral += amount
    v.net_deposits[asset] = v.net_deposits.get(asset, 0) + amount
    pe.touched[(INSURANCE, asset)] = None
    out.append(E.InsuranceFunded(seq=v.seq, ts=v.ts, asset=asset, amount=amount,
                                 reason=cmd.reason))
