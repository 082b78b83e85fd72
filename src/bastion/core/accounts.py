"""Account commands: deposits, withdrawals, operator adjustments, self-trade prevention.

``credit`` is the only way money enters or leaves the venue: it keeps total supply per asset
below 2**62, so every balance and sum fits the int64 snapshot encoding.
"""

from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.rules import STP_MODES, Refused, int_in
from bastion.core.state import Account
from bastion.core.venue import Venue


def amount_of(value: object, what: str = "amount") -> int:
    if not int_in(value, 1, X.MAX_INT):
        raise Refused(X.INVALID_AMOUNT, f"{what} must be a positive integer, got {value!r}")
    assert isinstance(value, int)
    return value


def deposit(v: Venue, cmd: C.Deposit, out: list[E.Event]) -> None:
    v.asset(cmd.asset)
    amount = amount_of(cmd.amount)
    if not int_in(cmd.account, 1, X.MAX_INT):
        raise Refused(X.INVALID_ARGUMENT, f"account must be a positive integer, "
                                          f"got {cmd.account!r}")
    if v.net_deposits.get(cmd.asset, 0) + amount > X.MAX_INT:
        raise Refused(X.INVALID_AMOUNT, f"total {cmd.asset} supply would exceed 2**62 units")
    acct = v.accounts.get(cmd.account)
    if acct is None:
        acct = v.add_account(Account(account=cmd.account, available={}, held={}))
    credit(v, acct, cmd.asset, amount, "deposit", cmd.reason, out)


def withdraw(v: Venue, cmd: C.Withdraw, out: list[E.Event]) -> None:
    v.asset(cmd.asset)
    acct = v.account(cmd.account)
    amount = amount_of(cmd.amount)
    if acct.available.get(cmd.asset, 0) < amount:
        raise Refused(X.INSUFFICIENT_FUNDS, f"withdrawal of {amount} {cmd.asset} exceeds "
                                            f"available {acct.available.get(cmd.asset, 0)}")
    credit(v, acct, cmd.asset, -amount, "withdrawal", cmd.reason, out)


def adjust(v: Venue, cmd: C.AdjustBalance, out: list[E.Event]) -> None:
    v.asset(cmd.asset)
    acct = v.account(cmd.account)
    if not int_in(cmd.delta, -X.MAX_INT, X.MAX_INT) or cmd.delta == 0:
        raise Refused(X.INVALID_AMOUNT, f"delta must be a non-zero integer, got {cmd.delta!r}")
    if not isinstance(cmd.reason, str) or not cmd.reason.strip():
        raise Refused(X.INVALID_ARGUMENT, "a manual adjustment needs a reason")
    if acct.available.get(cmd.asset, 0) + cmd.delta < 0:
        raise Refused(X.INSUFFICIENT_FUNDS, "adjustment would make the balance negative")
    credit(v, acct, cmd.asset, cmd.delta, "adjustment", cmd.reason, out)


def credit(v: Venue, acct: Account, asset: str, delta: int, kind: str, reason: str,
           out: list[E.Event]) -> None:
    """The only way money enters or leaves (refused past 2**62 units of total supply)."""
    supply = v.net_deposits.get(asset, 0) + delta
    if supply > X.MAX_INT:
        raise Refused(X.INVALID_AMOUNT, f"total {asset} supply would exceed 2**62 units")
    acct.available[asset] = acct.available.get(asset, 0) + delta
    v.net_deposits[asset] = supply
    out.append(E.BalanceChanged(seq=v.seq, ts=v.ts, account=acct.account, asset=asset,
                                delta=delta, kind=kind,
                                reason=reason if isinstance(reason, str) else ""))


def set_stp(v: Venue, cmd: C.SetAccountSTP, out: list[E.Event]) -> None:
    acct = v.account(cmd.account)
    if cmd.stp not in STP_MODES:
        raise Refused(X.INVALID_ARGUMENT, f"unknown self-trade prevention mode {cmd.stp!r}")
    acct.stp = cmd.stp
    out.append(E.AccountUpdated(seq=v.seq, ts=v.ts, account=acct.account, stp=cmd.stp))
