"""Withdrawals and deposits: the journaled, deterministic half of the withdrawal pipeline.

A withdrawal holds its amount plus fee and moves
``requested -> (risk_review) -> approved -> submitted -> confirmed | failed | cancelled``
(``rejected`` by an operator in review). Only these transitions exist; any other refuses
with ``WITHDRAWAL_STATE`` and changes nothing, which is what makes the worker's repeated
reports harmless and "confirmed twice" impossible. A user may cancel until ``submitted``;
the worker journals ``submitted`` *before* it calls custody, so a cancelled withdrawal can
never be sent. A deposit moves ``confirming (n/N) -> credited``, keyed by its txid, and is
credited exactly once.

Money: held withdrawal funds leave the account's available balance and sit in ``held`` until
the withdrawal is final: confirmed (the amount leaves the venue, the fee goes to the fee pool)
or failed/cancelled/rejected (all of it goes back). The conservation audit counts them.
"""

from collections.abc import Callable
from typing import Any

from bastion.core import commands as C
from bastion.core import errors as X
from bastion.core import events as E
from bastion.core.accounts import credit
from bastion.core.perp.state import INSURANCE
from bastion.core.rules import Refused, int_in
from bastion.core.state import Account
from bastion.core.venue import Venue
from bastion.core.wallet import state as S

DAY_MS = 86_400_000
MAX_ADDRESS = 90
MAX_TXID = 128
MAX_CLIENT_ID = 64
MAX_CONFIRMATIONS = 1_000


def _text(value: object, name: str, limit: int, required: bool = True,
          code: str = X.INVALID_ARGUMENT) -> str:
    if not isinstance(value, str) or len(value) > limit or not value.isascii() \
            or not value.isprintable() or (required and not value):
        raise Refused(code, f"{name} must be {'1-' if required else 'up to '}{limit} printable "
                            f"ASCII characters")
    return value


class Wallet:
    def __init__(self, venue: Venue) -> None:
        self.v = venue
        self.next_wid = 1
        self.rules: dict[str, S.AssetRules] = {}
        self.withdrawals: dict[int, S.Withdrawal] = {}
        self.open: dict[int, S.Withdrawal] = {}  # not final, in id order (dicts keep order)
        self.client_ids: dict[tuple[int, str], int] = {}
        self.txids: dict[str, int] = {}
        self.held: dict[tuple[int, str], int] = {}
        self.deposits: dict[str, S.DepositRecord] = {}
        self.deposit_addresses: dict[tuple[str, str], S.DepositAddress] = {}
        self.account_addresses: dict[tuple[int, str], str] = {}
        self.destinations: dict[tuple[int, str, str], int] = {}
        self.daily: dict[tuple[int, str], S.DailyUse] = {}
        #: read indexes (not state): each account's withdrawals and deposits, oldest first
        self.by_account: dict[int, list[int]] = {}
        self.deposits_by_account: dict[int, list[str]] = {}

    # ------------------------------------------------------------------ lookups

    def rules_of(self, asset: object) -> S.AssetRules:
        if type(asset) is not str or asset not in self.v.assets:
            raise Refused(X.UNKNOWN_ASSET, f"unknown asset {asset!r}")
        rules = self.rules.get(asset)
        if rules is None:
            raise Refused(X.WITHDRAWALS_DISABLED, f"no withdrawal rules for {asset}: "
                                                  f"withdrawals and deposits are off")
        return rules

    def withdrawal(self, wid: object) -> S.Withdrawal:
        w = self.withdrawals.get(wid) if type(wid) is int else None
        if w is None:
            raise Refused(X.UNKNOWN_WITHDRAWAL, f"no withdrawal {wid!r}")
        return w

    def paused_reason(self, asset: str) -> str:
        """Why new withdrawals of `asset` are refused right now, or "" when they are not: an
        operator's or the worker's pause (journaled), or, derived and lifted by itself, the
        venue's own perpetual account in `asset` (the insurance fund) below zero: dYdX v4
        gates withdrawals on negative collateral the same way."""
        rules = self.rules.get(asset)
        if rules is not None and rules.paused:
            return f"{rules.pause_reason} (by {rules.paused_by})"
        margins = getattr(self.v.ledgers.get("perp"), "margins", None)
        fund = margins.get((INSURANCE, asset)) if margins else None
        if fund is not None and fund.collateral < 0:
            return (f"the venue's {asset} insurance fund is negative ({fund.collateral}): "
                    f"withdrawals wait until it is covered")
        return ""

    def held_of(self, account: int, asset: str) -> int:
        return self.held.get((account, asset), 0)

    # ------------------------------------------------------------------ operator

    def set_rules(self, cmd: C.SetWithdrawalRules, out: list[E.Event]) -> None:
        if type(cmd.asset) is not str or cmd.asset not in self.v.assets:
            raise Refused(X.UNKNOWN_ASSET, f"unknown asset {cmd.asset!r}")
        for name in ("min_amount", "fee", "daily_limit", "manual_above", "address_delay_ms"):
            if not int_in(getattr(cmd, name), 0, X.MAX_INT):
                raise Refused(X.INVALID_ARGUMENT, f"{name} must be an integer in 0..2**62")
        if not int_in(cmd.min_amount, 1, X.MAX_INT):
            raise Refused(X.INVALID_ARGUMENT, "min_amount must be at least 1")
        if not int_in(cmd.confirmations, 1, MAX_CONFIRMATIONS):
            raise Refused(X.INVALID_ARGUMENT, f"confirmations must be 1..{MAX_CONFIRMATIONS}")
        old = self.rules.get(cmd.asset)
        self.rules[cmd.asset] = S.AssetRules(
            cmd.asset, cmd.min_amount, cmd.fee, cmd.daily_limit, cmd.manual_above,
            cmd.address_delay_ms, cmd.confirmations,
            paused=old.paused if old else False, pause_reason=old.pause_reason if old else "",
            paused_by=old.paused_by if old else "")
        out.append(E.WithdrawalRulesSet(seq=self.v.seq, ts=self.v.ts, asset=cmd.asset,
                                        reason=_text(cmd.reason, "reason", 500, False)))

    def pause(self, cmd: C.PauseWithdrawals, out: list[E.Event]) -> None:
        rules = self.rules_of(cmd.asset)
        reason = _text(cmd.reason, "reason", 500)
        by = _text(cmd.by, "by", 64)
        if type(cmd.paused) is not bool or cmd.paused == rules.paused:
            raise Refused(X.NO_CHANGE, f"withdrawals of {cmd.asset} are already "
                                       f"{'paused' if rules.paused else 'running'}")
        rules.paused = cmd.paused
        rules.pause_reason = reason if cmd.paused else ""
        rules.paused_by = by if cmd.paused else ""
        out.append(E.WithdrawalsPaused(seq=self.v.seq, ts=self.v.ts, asset=cmd.asset,
                                       paused=cmd.paused, reason=reason, by=by))

    # ------------------------------------------------------------------ withdrawals

    def request(self, cmd: C.RequestWithdrawal, out: list[E.Event]) -> None:
        """Validate everything, then hold amount + fee and queue."""
        v = self.v
        rules = self.rules_of(cmd.asset)
        acct = v.accounts.get(cmd.account) if type(cmd.account) is int else None
        if acct is None:
            raise Refused(X.UNKNOWN_ACCOUNT, f"unknown account {cmd.account!r}")
        address = _text(cmd.address, "address", MAX_ADDRESS, code=X.INVALID_ADDRESS)
        client_id = _text(cmd.client_id, "client_id", MAX_CLIENT_ID, required=False)
        if client_id and (acct.account, client_id) in self.client_ids:
            raise Refused(X.DUPLICATE_CLIENT_ID, f"withdrawal client id {client_id!r} exists "
                                                 f"(withdrawal {self.client_ids[(acct.account, client_id)]})")
        paused = self.paused_reason(cmd.asset)
        if paused:
            raise Refused(X.WITHDRAWALS_PAUSED, f"withdrawals of {cmd.asset} are paused: "
                                                f"{paused}")
        if not int_in(cmd.amount, 1, X.MAX_INT):
            raise Refused(X.INVALID_AMOUNT, f"amount must be a positive integer, got "
                                            f"{cmd.amount!r}")
        if cmd.amount < rules.min_amount:
            raise Refused(X.BELOW_MINIMUM, f"amount {cmd.amount} is below the {cmd.asset} "
                                           f"minimum {rules.min_amount}", field="amount",
                          limit=rules.min_amount, value=cmd.amount)
        total = cmd.amount + rules.fee
        available = acct.available.get(cmd.asset, 0)
        if available < total:
            raise Refused(X.INSUFFICIENT_FUNDS, f"withdrawal of {cmd.amount} + fee {rules.fee} "
                                                f"{cmd.asset} exceeds available {available}",
                          field="available", limit=available, value=total)
        day = v.ts // DAY_MS
        use = self.daily.get((acct.account, cmd.asset))
        used = use.used if use is not None and use.day == day else 0
        if rules.daily_limit and used + cmd.amount > rules.daily_limit:
            raise Refused(X.DAILY_LIMIT, f"daily {cmd.asset} withdrawal limit {rules.daily_limit}"
                                         f" would be exceeded (used today {used})",
                          field="daily_used", limit=rules.daily_limit, value=used + cmd.amount)
        # all checks passed: mutate
        dest = (acct.account, cmd.asset, address)
        added = self.destinations.setdefault(dest, v.ts)
        not_before = added + rules.address_delay_ms
        state = S.RISK_REVIEW if rules.manual_above and cmd.amount > rules.manual_above \
            else S.REQUESTED if v.ts < not_before else S.APPROVED
        wid = self.next_wid
        self.next_wid += 1
        w = S.Withdrawal(wid, acct.account, cmd.asset, cmd.amount, rules.fee, address, state,
                         v.ts, v.ts, client_id=client_id, not_before=not_before)
        acct.available[cmd.asset] = available - total
        self._hold(w, total)
        self.daily[(acct.account, cmd.asset)] = S.DailyUse(acct.account, cmd.asset, day,
                                                            used + cmd.amount)
        self.withdrawals[wid] = w
        self.open[wid] = w
        self.by_account.setdefault(acct.account, []).append(wid)
        if client_id:
            self.client_ids[(acct.account, client_id)] = wid
        self._emit(w, out)

    def cancel(self, cmd: C.CancelWithdrawal, out: list[E.Event]) -> None:
        w = self.withdrawal(cmd.wid)
        if w.account != cmd.account:
            raise Refused(X.UNKNOWN_WITHDRAWAL, f"no withdrawal {cmd.wid} for account "
                                                f"{cmd.account!r}")
        self._expect(w, (S.REQUESTED, S.RISK_REVIEW, S.APPROVED), "cancel")
        self._finish(w, S.CANCELLED, "cancelled by the user", refund=True, out=out)

    def review(self, cmd: C.ReviewWithdrawal, out: list[E.Event]) -> None:
        w = self.withdrawal(cmd.wid)
        operator = _text(cmd.operator, "operator", 64)
        reason = _text(cmd.reason, "reason", 500, required=False)
        if type(cmd.approve) is not bool:
            raise Refused(X.INVALID_ARGUMENT, "approve must be true or false")
        self._expect(w, (S.RISK_REVIEW,), "review")
        if not cmd.approve:
            self._finish(w, S.REJECTED, f"rejected by {operator}: {reason}", refund=True,
                         out=out)
            return
        w.state = S.REQUESTED if self.v.ts < w.not_before else S.APPROVED
        w.reason = f"approved by {operator}"
        self._emit(w, out)

    def release(self, cmd: C.ReleaseWithdrawal, out: list[E.Event]) -> None:
        w = self.withdrawal(cmd.wid)
        self._expect(w, (S.REQUESTED,), "release")
        if self.v.ts < w.not_before:
            raise Refused(X.WITHDRAWAL_STATE, f"withdrawal {w.wid}: its address may be used "
                                              f"from ts {w.not_before}")
        w.state = S.APPROVED
        self._emit(w, out)

    def submit(self, cmd: C.SubmitWithdrawal, out: list[E.Event]) -> None:
        w = self.withdrawal(cmd.wid)
        key = _text(cmd.key, "key", MAX_TXID)
        self._expect(w, (S.APPROVED,), "submit")
        w.state = S.SUBMITTED
        w.key = key
        self._emit(w, out)

    def confirm(self, cmd: C.ConfirmWithdrawal, out: list[E.Event]) -> None:
        w = self.withdrawal(cmd.wid)
        txid = _text(cmd.txid, "txid", MAX_TXID)
        self._expect(w, (S.SUBMITTED,), "confirm")
        if txid in self.txids:
            raise Refused(X.DUPLICATE_TXID, f"txid {txid} already confirmed withdrawal "
                                            f"{self.txids[txid]}")
        v = self.v
        self.txids[txid] = w.wid
        w.txid = txid
        # the hold pays: the amount leaves the venue (the one BalanceChanged audit trail),
        # the fee stays in the fee pool
        self._finish(w, S.CONFIRMED, "", refund=True, out=None)
        acct = v.accounts[w.account]
        credit(v, acct, w.asset, -w.amount, "withdrawal", f"withdrawal {w.wid} txid {txid}", out)
        acct.available[w.asset] -= w.fee
        v.fees[w.asset] = v.fees.get(w.asset, 0) + w.fee
        assert acct.available[w.asset] >= 0
        self._emit(w, out)

    def fail(self, cmd: C.FailWithdrawal, out: list[E.Event]) -> None:
        w = self.withdrawal(cmd.wid)
        reason = _text(cmd.reason, "reason", 500)
        self._expect(w, (S.SUBMITTED,), "fail")
        self._finish(w, S.FAILED, reason, refund=True, out=out)

    def _expect(self, w: S.Withdrawal, states: tuple[str, ...], verb: str) -> None:
        if w.state not in states:
            raise Refused(X.WITHDRAWAL_STATE, f"cannot {verb} withdrawal {w.wid}: it is "
                                              f"{w.state}")

    def _hold(self, w: S.Withdrawal, delta: int) -> None:
        key = (w.account, w.asset)
        held = self.held.get(key, 0) + delta
        assert held >= 0, "withdrawal hold went negative"
        if held:
            self.held[key] = held
        else:
            del self.held[key]

    def _finish(self, w: S.Withdrawal, state: str, reason: str, refund: bool,
                out: list[E.Event] | None) -> None:
        """Leave the queue: the hold goes back to the account (refund) or out of the venue."""
        total = w.amount + w.fee
        self._hold(w, -total)
        if refund:
            acct = self.v.accounts[w.account]
            acct.available[w.asset] = acct.available.get(w.asset, 0) + total
            use = self.daily.get((w.account, w.asset))
            if state != S.CONFIRMED and use is not None and use.day == w.created_ts // DAY_MS:
                use.used -= w.amount
        w.state = state
        w.reason = reason
        del self.open[w.wid]
        assert w.state in S.FINAL_STATES
        if out is not None:
            self._emit(w, out)

    def _emit(self, w: S.Withdrawal, out: list[E.Event]) -> None:
        w.updated_ts = self.v.ts
        out.append(E.WithdrawalUpdated(seq=self.v.seq, ts=self.v.ts, wid=w.wid,
                                       account=w.account, asset=w.asset, amount=w.amount,
                                       fee=w.fee, state=w.state, address=w.address,
                                       client_id=w.client_id, txid=w.txid, reason=w.reason))

    # ------------------------------------------------------------------ deposits

    def assign_address(self, cmd: C.AssignDepositAddress, out: list[E.Event]) -> None:
        self.rules_of(cmd.asset)
        if not int_in(cmd.account, 1, X.MAX_INT):
            raise Refused(X.INVALID_ARGUMENT, "account must be a positive integer")
        address = _text(cmd.address, "address", MAX_ADDRESS)
        if (cmd.account, cmd.asset) in self.account_addresses:
            raise Refused(X.NO_CHANGE, f"account {cmd.account} has a {cmd.asset} address")
        if (cmd.asset, address) in self.deposit_addresses:
            raise Refused(X.INVALID_ARGUMENT, "address belongs to another account")
        self.deposit_addresses[(cmd.asset, address)] = S.DepositAddress(address, cmd.account,
                                                                        cmd.asset)
        self.account_addresses[(cmd.account, cmd.asset)] = address
        out.append(E.DepositAddressAssigned(seq=self.v.seq, ts=self.v.ts, account=cmd.account,
                                            asset=cmd.asset, address=address))

    def observe_deposit(self, cmd: C.ObserveDeposit, out: list[E.Event]) -> None:
        rules = self.rules_of(cmd.asset)
        txid = _text(cmd.txid, "txid", MAX_TXID)
        owner = self.deposit_addresses.get((cmd.asset, cmd.address)) \
            if isinstance(cmd.address, str) else None
        if owner is None:
            raise Refused(X.UNKNOWN_ADDRESS, f"{cmd.asset} address {cmd.address!r} is not ours")
        if not int_in(cmd.amount, 1, X.MAX_INT) or not int_in(cmd.confirmations, 0, X.MAX_INT):
            raise Refused(X.INVALID_AMOUNT, "amount must be positive and confirmations >= 0")
        dep = self.deposits.get(txid)
        if dep is not None and (dep.asset, dep.address, dep.amount) != (
                cmd.asset, cmd.address, cmd.amount):
            raise Refused(X.DUPLICATE_TXID, f"txid {txid} was seen with other terms")
        if dep is not None and (dep.credited or cmd.confirmations <= dep.confirmations):
            raise Refused(X.NO_CHANGE, f"deposit {txid} is already "
                                       f"{'credited' if dep.credited else 'at that depth'}")
        v = self.v
        if v.net_deposits.get(cmd.asset, 0) + cmd.amount > X.MAX_INT:
            raise Refused(X.INVALID_AMOUNT, f"total {cmd.asset} supply would exceed 2**62 units")
        if dep is None:
            dep = self.deposits[txid] = S.DepositRecord(
                txid, owner.account, cmd.asset, cmd.address, cmd.amount, 0, rules.confirmations,
                False, v.ts)
            self.deposits_by_account.setdefault(owner.account, []).append(txid)
        dep.confirmations = cmd.confirmations
        if dep.confirmations >= dep.required:
            acct = v.accounts.get(dep.account)
            if acct is None:
                acct = v.add_account(Account(account=dep.account, available={}, held={}))
            credit(v, acct, dep.asset, dep.amount, "deposit", f"txid {txid}", out)
            dep.credited = True
            dep.credited_ts = v.ts
        out.append(E.DepositUpdated(seq=v.seq, ts=v.ts, txid=txid, account=dep.account,
                                    asset=dep.asset, amount=dep.amount,
                                    confirmations=dep.confirmations, required=dep.required,
                                    state="credited" if dep.credited else "confirming"))

    # ------------------------------------------------------------------ audit, export

    def held_totals(self) -> dict[str, int]:
        """Funds held for open withdrawals, per asset (part of the conservation audit)."""
        totals: dict[str, int] = {}
        for (_, asset), amount in self.held.items():
            totals[asset] = totals.get(asset, 0) + amount
        return totals

    def check_invariants(self) -> list[str]:
        problems: list[str] = []
        want: dict[tuple[int, str], int] = {}
        confirmed_txids: dict[str, int] = {}
        for w in self.withdrawals.values():
            if w.state in S.OPEN_STATES:
                key = (w.account, w.asset)
                want[key] = want.get(key, 0) + w.amount + w.fee
                if w.wid not in self.open:
                    problems.append(f"withdrawal {w.wid} is {w.state} but not queued")
            elif w.wid in self.open:
                problems.append(f"withdrawal {w.wid} is {w.state} but still queued")
            if w.state == S.CONFIRMED:
                if w.txid in confirmed_txids:
                    problems.append(f"txid {w.txid} confirmed withdrawals "
                                    f"{confirmed_txids[w.txid]} and {w.wid}")
                confirmed_txids[w.txid] = w.wid
        if want != self.held:
            problems.append(f"withdrawal holds {self.held} != open withdrawals {want}")
        for dep in self.deposits.values():
            if dep.credited != (dep.confirmations >= dep.required):
                problems.append(f"deposit {dep.txid} credited={dep.credited} at "
                                f"{dep.confirmations}/{dep.required}")
        return problems

    def export(self) -> S.WalletState:
        return S.WalletState(
            next_wid=self.next_wid,
            rules=[self.rules[a] for a in sorted(self.rules)],
            withdrawals=list(self.withdrawals.values()),
            deposits=list(self.deposits.values()),
            deposit_addresses=list(self.deposit_addresses.values()),
            destinations=[S.KnownDestination(a, s, d, ts)
                          for (a, s, d), ts in self.destinations.items()],
            daily=list(self.daily.values()),
        )

    def restore(self, state: S.WalletState) -> None:
        self.next_wid = state.next_wid
        self.rules = {r.asset: r for r in state.rules}
        for w in state.withdrawals:
            self.withdrawals[w.wid] = w
            self.by_account.setdefault(w.account, []).append(w.wid)
            if w.state in S.OPEN_STATES:
                self.open[w.wid] = w
                key = (w.account, w.asset)
                self.held[key] = self.held.get(key, 0) + w.amount + w.fee
            if w.client_id:
                self.client_ids[(w.account, w.client_id)] = w.wid
            if w.state == S.CONFIRMED:
                self.txids[w.txid] = w.wid
        self.deposits = {d.txid: d for d in state.deposits}
        for d in state.deposits:
            self.deposits_by_account.setdefault(d.account, []).append(d.txid)
        for a in state.deposit_addresses:
            self.deposit_addresses[(a.asset, a.address)] = a
            self.account_addresses[(a.account, a.asset)] = a.address
        self.destinations = {(d.account, d.asset, d.address): d.added_ts
                             for d in state.destinations}
        self.daily = {(d.account, d.asset): d for d in state.daily}


WalletHandler = Callable[[Wallet, Any, list[E.Event]], None]

#: command -> wallet handler; the engine registers these in its dispatch table
COMMANDS: dict[type, WalletHandler] = {
    C.SetWithdrawalRules: Wallet.set_rules,
    C.RequestWithdrawal: Wallet.request,
    C.CancelWithdrawal: Wallet.cancel,
    C.ReviewWithdrawal: Wallet.review,
    C.ReleaseWithdrawal: Wallet.release,
    C.SubmitWithdrawal: Wallet.submit,
    C.ConfirmWithdrawal: Wallet.confirm,
    C.FailWithdrawal: Wallet.fail,
    C.PauseWithdrawals: Wallet.pause,
    C.AssignDepositAddress: Wallet.assign_address,
    C.ObserveDeposit: Wallet.observe_deposit,
}
